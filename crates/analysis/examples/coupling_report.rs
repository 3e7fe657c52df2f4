//! Prints the channel-coupling groups of a model: `cargo run -p pare-analysis --example
//! coupling_report -- MODEL.onnx|GRAPH.ir [--all]`.

use pare_analysis::CouplingGroups;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: coupling_report MODEL.onnx|GRAPH.ir [--all]")?;
    let g = if path.ends_with(".ir") {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let mut g = pare_ir::parse_graph(&text).map_err(|e| e.to_string())?;
        pare_ir::infer::infer_types(&mut g).map_err(|e| e.to_string())?;
        g
    } else {
        pare_onnx::load_model(std::path::Path::new(path), &Default::default())
            .map_err(|e| e.to_string())?
            .graph
    };
    let t = std::time::Instant::now();
    let cg = CouplingGroups::analyze(&g)?;
    let s = cg.summary();
    println!(
        "{path}: {} groups, {} prunable, {} prunable units, {} prunable channels ({:.1} ms)",
        s.groups,
        s.prunable_groups,
        s.prunable_units,
        s.prunable_channels,
        t.elapsed().as_secs_f64() * 1e3
    );
    if let Err(e) = cg.verify(&g) {
        println!("INVARIANT VIOLATION: {e}");
    }
    if args.iter().any(|a| a == "--all") {
        print!("{}", cg.describe(&g));
    }
    Ok(())
}
