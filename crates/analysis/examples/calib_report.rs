//! Runs the calibration analysis on a model and prints a summary:
//! `cargo run --release -p pare-analysis --example calib_report -- MODEL.onnx SAMPLES_DIR`
//! (SAMPLES_DIR: test_data_set_N directories or directories of `<input>.npy` files).

use pare_analysis::{CalibConfig, CalibStats};
use pare_interp::Interpreter;
use pare_pass::SampleSet;
use std::path::Path;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, dir] = args.as_slice() else {
        return Err("usage: calib_report MODEL.onnx SAMPLES_DIR".into());
    };
    let g = pare_onnx::load_model(Path::new(model), &Default::default())
        .map_err(|e| e.to_string())?
        .graph;
    let set = SampleSet::load(&g, Path::new(dir)).map_err(|e| e.to_string())?;
    let t = std::time::Instant::now();
    let st = CalibStats::collect(&g, &set, &Interpreter::new(), &CalibConfig::default())
        .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let hs: Vec<_> = st.hessians().collect();
    let bytes: usize = hs.iter().map(|(_, h)| h.data.len() * 8).sum();
    println!(
        "{model}: {} samples in {secs:.2} s; {} values, {} linear layers with XᵀX ({:.1} MB, shared \
         matrices counted per layer), {} skipped",
        st.num_samples,
        st.values().count(),
        hs.len(),
        bytes as f64 / 1e6,
        st.skipped_hessians.len()
    );
    for (n, why) in &st.skipped_hessians {
        println!("  skipped {}: {why}", g.node(*n).name);
    }
    for &o in g.outputs() {
        let (Some(s), Some(h)) = (st.stats(o), st.histogram(o)) else {
            continue;
        };
        println!(
            "  output '{}': min {:.4} max {:.4} mean {:.4} std {:.4}; 99.99% {:?}, mse(8) {:?}, \
             entropy(8) {:?}",
            g.value(o).name,
            s.min,
            s.max,
            s.mean(),
            s.variance().sqrt(),
            h.percentile_range(99.99, true),
            h.mse_range(8),
            h.entropy_range(8)
        );
    }
    Ok(())
}
