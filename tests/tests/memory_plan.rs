//! The static memory plan on every real model (shapes bound from test_data_set_0, after
//! canonicalize): no two live buffers overlap, and the arena is reported against the sum of
//! all intermediates and the live peak.

use pare_ir::{Shape, TensorType};
use pare_pass::analyses::MemoryPlan;
use pare_pass::{run_pipeline, PassContext};
use pare_tests::{cases, data_set_dirs, read_data_set};

#[test]
fn real_models_get_a_valid_memory_plan() {
    let registry = pare_passes::registry();
    let mut table = String::new();
    for c in cases() {
        let mut g = pare_onnx::load_model(&c.model, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .graph;
        let ds = &data_set_dirs(&c.fixtures)[0];
        let inputs = read_data_set(ds, "input_").expect("inputs");
        for (&v, (_, t)) in g.inputs().to_vec().iter().zip(&inputs) {
            g.set_type(v, TensorType::new(t.dtype(), Shape::fixed(t.shape())));
        }
        pare_ir::infer::reinfer_types(&mut g).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        run_pipeline(&registry, "canonicalize", &mut g, &mut PassContext::new())
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        match MemoryPlan::plan(&g) {
            Ok(p) => {
                p.check().unwrap_or_else(|e| panic!("{}: {e}", c.name));
                assert!(
                    p.arena_bytes <= p.total_bytes.div_ceil(64) * 64 + 64 * p.buffers.len() as u64
                );
                table.push_str(&format!(
                    "{:<26} buffers {:>4}  arena {:>10} B  no reuse {:>10} B  live peak {:>10} B\n",
                    c.name,
                    p.buffers.len(),
                    p.arena_bytes,
                    p.total_bytes,
                    p.peak_live_bytes
                ));
            }
            // Models whose shapes depend on data (Loop/If outputs) cannot be planned statically.
            Err(e) => table.push_str(&format!("{:<26} not planned: {e}\n", c.name)),
        }
    }
    eprint!("{table}");
}
