//! `ops::conv` (Conv, ConvTranspose) against the reference interpreter: one-node graphs on
//! random inputs over many shapes (strides, pads, dilations, groups, depthwise with and without
//! a channel multiplier, 1x1, 1-D, odd sizes, batch > 1), every epilogue (bias, residual,
//! activations), 1 and 3 threads, through the C entry points (so the parameter encoding and
//! the pointer plumbing are covered) and the safe API. Results must be within
//! `1e-4 · max(1, max|ref|)`.

use pare_interp::Interpreter;
use pare_ir::Tensor;
use pare_runtime::ops::conv::*;
use pare_runtime::ops::{KernelFn, STATUS_NULL, STATUS_OK, STATUS_PARAMS};
use pare_runtime::Activation;

mod common;
use common::{act_ref, assert_close, dims, fill, Rng, ACTS};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn interp(src: &str, inputs: &[Tensor]) -> Tensor {
    let g = pare_ir::text::parse_graph(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    Interpreter::with_threads(1)
        .run(&g, inputs)
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .remove(0)
}

fn call(k: KernelFn, params: &[i64], bufs: &[*mut u8], threads: usize) -> i32 {
    // SAFETY: the tests pass buffers of the sizes the parameters imply.
    unsafe { k(params.as_ptr(), bufs.as_ptr(), threads) }
}

fn ptr<T>(v: &[T]) -> *mut u8 {
    v.as_ptr() as *mut u8
}

fn opt_ptr(v: &Option<Vec<f32>>) -> *mut u8 {
    v.as_ref().map_or(std::ptr::null_mut(), |v| ptr(v))
}

// ---------------------------------------------------------------------------------------------
// Conv
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Case {
    p: ConvParams,
    one_d: bool,
}

fn case(n: usize, c_in: usize, hw: (usize, usize), c_out: usize, k: (usize, usize)) -> Case {
    Case {
        p: ConvParams::new(n, c_in, hw.0, hw.1, c_out, k.0, k.1),
        one_d: false,
    }
}

impl Case {
    fn s(mut self, sh: usize, sw: usize) -> Self {
        self.p.stride_h = sh;
        self.p.stride_w = sw;
        self
    }
    fn d(mut self, dh: usize, dw: usize) -> Self {
        self.p.dilation_h = dh;
        self.p.dilation_w = dw;
        self
    }
    fn pad(mut self, t: usize, l: usize, b: usize, r: usize) -> Self {
        self.p.pad_top = t;
        self.p.pad_left = l;
        self.p.pad_bottom = b;
        self.p.pad_right = r;
        self
    }
    fn g(mut self, g: usize) -> Self {
        self.p.group = g;
        self
    }
    fn epi(mut self, bias: bool, res: bool, act: Activation) -> Self {
        self.p.has_bias = bias;
        self.p.has_residual = res;
        self.p.activation = act;
        self
    }
    fn one_d(n: usize, c_in: usize, l: usize, c_out: usize, k: usize) -> Self {
        Case {
            p: ConvParams::new(n, c_in, 1, l, c_out, 1, k),
            one_d: true,
        }
    }

    /// The reference output (interpreter, then residual and activation in f64).
    fn reference(
        &self,
        x: &[f32],
        w: &[f32],
        b: &Option<Vec<f32>>,
        r: &Option<Vec<f32>>,
    ) -> Vec<f32> {
        let p = &self.p;
        let (xs, ws, attrs) = if self.one_d {
            (
                vec![p.n, p.c_in, p.w],
                vec![p.c_out, p.c_in / p.group, p.kw],
                format!(
                    "strides=[{}], dilations=[{}], pads=[{},{}], group={}",
                    p.stride_w, p.dilation_w, p.pad_left, p.pad_right, p.group
                ),
            )
        } else {
            (
                vec![p.n, p.c_in, p.h, p.w],
                vec![p.c_out, p.c_in / p.group, p.kh, p.kw],
                format!(
                    "strides=[{},{}], dilations=[{},{}], pads=[{},{},{},{}], group={}",
                    p.stride_h,
                    p.stride_w,
                    p.dilation_h,
                    p.dilation_w,
                    p.pad_top,
                    p.pad_left,
                    p.pad_bottom,
                    p.pad_right,
                    p.group
                ),
            )
        };
        let mut inputs = vec![
            Tensor::from_vec(xs.clone(), x.to_vec()),
            Tensor::from_vec(ws.clone(), w.to_vec()),
        ];
        let (bdecl, barg) = match b {
            Some(b) => {
                inputs.push(Tensor::from_vec(vec![p.c_out], b.clone()));
                (format!(", %b: f32[{}]", p.c_out), ", %b")
            }
            None => (String::new(), ""),
        };
        let src = format!(
            "graph @main(%x: f32[{}], %w: f32[{}]{bdecl}) -> (%y) {{ %y = Conv(%x, %w{barg}) {{{attrs}}} }}",
            dims(&xs),
            dims(&ws)
        );
        let out = interp(&src, &inputs);
        let sh = out.shape().to_vec();
        if self.one_d {
            assert_eq!(sh, vec![p.n, p.c_out, p.out_w()], "{src}");
        } else {
            assert_eq!(sh, vec![p.n, p.c_out, p.out_h(), p.out_w()], "{src}");
        }
        let mut v = out.to_vec::<f32>().expect("f32");
        if let Some(r) = r {
            v.iter_mut().zip(r).for_each(|(a, b)| *a += b);
        }
        v.iter_mut().for_each(|a| *a = act_ref(p.activation, *a));
        v
    }
}

/// `(x, w, bias, residual)` of a case.
type Inputs = (Vec<f32>, Vec<f32>, Option<Vec<f32>>, Option<Vec<f32>>);

fn inputs(p: &ConvParams, seed: u64) -> Inputs {
    let x = fill(p.x_len(), seed);
    let w = fill(p.w_len(), seed + 1);
    let b = p.has_bias.then(|| fill(p.c_out, seed + 2));
    let r = p.has_residual.then(|| fill(p.y_len(), seed + 3));
    (x, w, b, r)
}

/// Runs one case through the C entry point with 1 and 3 threads, and the safe API with 2.
fn check(c: &Case, seed: u64) {
    let p = &c.p;
    assert_eq!(ConvParams::decode(&p.encode()), Some(*p));
    let (x, w, b, r) = inputs(p, seed);
    let want = c.reference(&x, &w, &b, &r);
    let wp = conv_prepare_weights(p, &w);
    let words = p.encode();
    let ctx = format!("{c:?} ({:?})", p.algorithm());
    for threads in [1, 3] {
        let mut y = vec![f32::NAN; p.y_len()];
        let scratch = vec![0u8; p.scratch_bytes()];
        let bufs = [
            ptr(&x),
            ptr(&wp),
            opt_ptr(&b),
            opt_ptr(&r),
            ptr(&y),
            if scratch.is_empty() {
                std::ptr::null_mut()
            } else {
                ptr(&scratch)
            },
        ];
        let st = call(pare_k_conv, &words, &bufs, threads);
        assert_eq!(st, STATUS_OK, "{ctx}");
        assert_close(&y, &want, &format!("{ctx}, {threads} threads"));
        let _ = &mut y;
    }
    let mut y = vec![f32::NAN; p.y_len()];
    let mut scratch = vec![0u8; p.scratch_bytes()];
    conv(
        p,
        &x,
        &wp,
        b.as_deref(),
        r.as_deref(),
        &mut y,
        &mut scratch,
        2,
    )
    .unwrap();
    assert_close(&y, &want, &format!("{ctx}, safe API"));
}

#[test]
fn conv_fixed_shapes() {
    use Activation::*;
    let cases = vec![
        // im2col, typical CNN shapes
        case(1, 3, (8, 8), 4, (3, 3)).pad(1, 1, 1, 1),
        case(1, 3, (17, 15), 16, (3, 3))
            .s(2, 2)
            .pad(1, 1, 1, 1)
            .epi(true, false, Relu),
        case(2, 8, (9, 11), 12, (3, 3))
            .pad(1, 1, 1, 1)
            .epi(true, true, Relu),
        case(1, 5, (13, 13), 7, (5, 5))
            .pad(2, 2, 2, 2)
            .epi(true, false, Identity),
        case(1, 4, (12, 10), 6, (3, 3)).d(2, 2).pad(2, 2, 2, 2),
        case(1, 4, (12, 10), 6, (3, 2))
            .d(2, 3)
            .s(2, 1)
            .pad(1, 0, 2, 3),
        case(1, 3, (7, 7), 5, (7, 7)).s(2, 2).pad(3, 3, 3, 3),
        case(1, 16, (6, 6), 32, (3, 3))
            .pad(0, 0, 0, 0)
            .epi(false, true, Tanh),
        case(1, 2, (1, 1), 3, (1, 1)).pad(1, 1, 1, 1),
        case(1, 3, (5, 40), 9, (1, 3)).pad(0, 1, 0, 1).s(1, 3),
        // asymmetric pads and odd sizes
        case(1, 3, (9, 9), 5, (3, 3)).pad(0, 1, 2, 0).s(2, 2),
        case(3, 2, (5, 7), 3, (2, 2)).pad(1, 0, 0, 1),
        // 1x1 stride 2 (im2col), 1x1 stride 1 (pointwise)
        case(1, 16, (14, 14), 24, (1, 1))
            .s(2, 2)
            .epi(true, false, Relu),
        case(2, 16, (7, 9), 24, (1, 1)).epi(true, true, Clamp { min: 0.0, max: 6.0 }),
        case(1, 64, (20, 20), 128, (1, 1)).epi(true, false, Identity),
        case(1, 3, (2, 2), 1, (1, 1)),
        // groups
        case(1, 8, (9, 9), 12, (3, 3))
            .g(2)
            .pad(1, 1, 1, 1)
            .epi(true, true, Relu),
        case(2, 12, (6, 7), 12, (3, 3))
            .g(3)
            .s(2, 2)
            .pad(1, 1, 1, 1)
            .epi(true, false, Gelu),
        case(1, 8, (8, 8), 16, (1, 1))
            .g(4)
            .epi(true, false, Sigmoid),
        case(1, 32, (5, 5), 64, (3, 3)).g(8).pad(1, 1, 1, 1),
        // depthwise (incl. channel multiplier, strides, dilation, 5x5)
        case(1, 8, (12, 12), 8, (3, 3))
            .g(8)
            .pad(1, 1, 1, 1)
            .epi(true, false, Relu),
        case(2, 6, (11, 13), 6, (3, 3))
            .g(6)
            .s(2, 2)
            .pad(1, 1, 1, 1)
            .epi(true, true, Clamp { min: 0.0, max: 6.0 }),
        case(1, 4, (19, 23), 4, (5, 5)).g(4).pad(2, 2, 2, 2).epi(
            false,
            false,
            LeakyRelu { alpha: 0.2 },
        ),
        case(1, 4, (10, 10), 8, (3, 3))
            .g(4)
            .pad(1, 1, 1, 1)
            .epi(true, false, Identity),
        case(1, 3, (9, 9), 9, (3, 3)).g(3).d(2, 2).pad(2, 2, 2, 2),
        case(1, 5, (16, 33), 5, (3, 3)).g(5).s(1, 2).pad(0, 1, 2, 1),
        case(1, 2, (40, 40), 2, (7, 7))
            .g(2)
            .s(3, 3)
            .pad(3, 3, 3, 3)
            .epi(true, true, Sigmoid),
        case(1, 1, (6, 6), 4, (3, 3)).pad(1, 1, 1, 1),
        case(1, 16, (3, 4), 16, (3, 3)).g(16).pad(1, 1, 1, 1),
        // larger im2col (several chunks, multi-panel, many k blocks)
        case(1, 64, (28, 28), 64, (3, 3))
            .pad(1, 1, 1, 1)
            .epi(true, true, Relu),
        case(1, 3, (64, 64), 16, (3, 3))
            .s(2, 2)
            .pad(1, 1, 1, 1)
            .epi(true, false, Relu),
        case(1, 128, (9, 9), 20, (3, 3)).pad(1, 1, 1, 1),
        // big enough for several threads (im2col tiles, GEMM threads, depthwise planes)
        case(1, 32, (20, 20), 48, (3, 3))
            .g(2)
            .pad(1, 1, 1, 1)
            .epi(true, true, Gelu),
        case(2, 16, (23, 37), 40, (3, 3))
            .s(2, 1)
            .pad(1, 0, 1, 2)
            .epi(true, false, Relu),
        case(1, 64, (32, 32), 128, (1, 1)).epi(true, true, Relu),
        case(2, 32, (30, 30), 32, (3, 3))
            .g(32)
            .pad(1, 1, 1, 1)
            .epi(true, true, Relu),
        // 1-D
        Case::one_d(1, 4, 20, 6, 3).pad(0, 1, 0, 1),
        Case::one_d(2, 8, 33, 8, 5)
            .s(1, 2)
            .pad(0, 2, 0, 2)
            .epi(true, true, Relu),
        Case::one_d(1, 6, 17, 6, 3)
            .g(6)
            .d(1, 2)
            .pad(0, 2, 0, 2)
            .epi(true, false, Tanh),
        Case::one_d(1, 16, 50, 32, 1).epi(true, false, GeluTanh),
        Case::one_d(1, 4, 9, 8, 4).g(2).s(1, 3).pad(0, 3, 0, 1),
        // Rows (small outputs): an STFT frame (4 positions, batch 4), a 1-D encoder tail,
        // a 1x1 on one position, grouped, padded and dilated, with residuals
        Case::one_d(4, 1, 640, 258, 256).s(1, 128),
        Case::one_d(2, 129, 4, 128, 3)
            .pad(0, 1, 0, 1)
            .epi(true, false, Relu),
        Case::one_d(1, 128, 4, 64, 3)
            .s(1, 2)
            .pad(0, 1, 0, 1)
            .epi(true, true, Relu),
        Case::one_d(3, 64, 1, 128, 1).epi(true, false, Sigmoid),
        Case::one_d(1, 128, 1, 1, 1).epi(true, false, Sigmoid),
        case(2, 8, (3, 3), 12, (3, 3))
            .g(2)
            .d(2, 2)
            .pad(2, 1, 1, 2)
            .epi(true, true, Clamp { min: 0.0, max: 6.0 }),
        case(1, 24, (4, 4), 40, (3, 3))
            .s(2, 2)
            .pad(1, 1, 1, 1)
            .epi(false, true, Gelu),
    ];
    for (i, c) in cases.iter().enumerate() {
        check(c, 100 + i as u64);
    }
}

#[test]
fn conv_every_activation() {
    for (i, &act) in ACTS.iter().enumerate() {
        check(
            &case(1, 6, (7, 9), 10, (3, 3))
                .pad(1, 1, 1, 1)
                .epi(true, true, act),
            7 + i as u64,
        );
        check(
            &case(1, 6, (7, 9), 6, (3, 3))
                .g(6)
                .pad(1, 1, 1, 1)
                .epi(true, true, act),
            70 + i as u64,
        );
        check(
            &case(1, 6, (7, 9), 10, (1, 1)).epi(true, true, act),
            700 + i as u64,
        );
    }
}

#[test]
fn conv_random_shapes() {
    let mut rng = Rng(0x5eed);
    for i in 0..150 {
        let group = [1, 1, 1, 2, 3][rng.below(5)];
        let depthwise = rng.below(4) == 0;
        let (c_in, c_out) = if depthwise {
            let c = 1 + rng.below(6);
            (c, c * (1 + rng.below(2)))
        } else {
            (group * (1 + rng.below(5)), group * (1 + rng.below(7)))
        };
        let group = if depthwise { c_in } else { group };
        let one_d = rng.below(5) == 0;
        let (kh, kw) = if one_d {
            (1, 1 + rng.below(5))
        } else {
            (1 + rng.below(4), 1 + rng.below(4))
        };
        let (sh, sw) = if one_d {
            (1, 1 + rng.below(3))
        } else {
            (1 + rng.below(3), 1 + rng.below(3))
        };
        let (dh, dw) = if one_d {
            (1, 1 + rng.below(2))
        } else {
            (1 + rng.below(2), 1 + rng.below(2))
        };
        let pads: Vec<usize> = (0..4).map(|_| rng.below(3)).collect();
        let (pt, pb) = if one_d { (0, 0) } else { (pads[0], pads[2]) };
        let h = if one_d {
            1
        } else {
            (kh - 1) * dh + 1 + rng.below(12)
        };
        let w = (kw - 1) * dw + 1 + rng.below(24);
        let mut c = if one_d {
            Case::one_d(1 + rng.below(2), c_in, w, c_out, kw)
        } else {
            case(1 + rng.below(2), c_in, (h, w), c_out, (kh, kw))
        };
        c = c
            .s(sh, sw)
            .d(dh, dw)
            .pad(pt, pads[1], pb, pads[3])
            .g(group)
            .epi(rng.below(2) == 0, rng.below(3) == 0, ACTS[rng.below(8)]);
        if c.p.validate().is_err() {
            continue;
        }
        check(&c, 1000 + i);
    }
}

#[test]
fn conv_in_place_residual() {
    for c in [
        case(1, 8, (9, 9), 12, (3, 3)).pad(1, 1, 1, 1),
        case(1, 8, (9, 9), 8, (3, 3)).g(8).pad(1, 1, 1, 1),
        case(2, 8, (9, 9), 12, (1, 1)),
        case(1, 32, (20, 20), 48, (3, 3)).g(2).pad(1, 1, 1, 1),
        case(2, 32, (30, 30), 32, (3, 3)).g(32).pad(1, 1, 1, 1),
        case(1, 64, (32, 32), 128, (1, 1)),
        case(2, 24, (4, 4), 40, (3, 3)).s(2, 2).pad(1, 1, 1, 1),
        // Direct: batch 2, a 16-column tile and a tail, both channel blocks.
        case(2, 10, (7, 21), 10, (3, 3)).pad(1, 1, 1, 1),
        case(2, 3, (11, 30), 16, (3, 3)).s(2, 2).pad(1, 1, 1, 1),
        case(1, 96, (16, 24), 24, (3, 3)).pad(1, 1, 1, 1),
    ] {
        let c = c.epi(true, true, Activation::Relu);
        let p = c.p;
        let (x, w, b, r) = inputs(&p, 5);
        let want = c.reference(&x, &w, &b, &r);
        let wp = conv_prepare_weights(&p, &w);
        for threads in [1, 3] {
            let y = r.clone().unwrap();
            let scratch = vec![0u8; p.scratch_bytes()];
            let bufs = [
                ptr(&x),
                ptr(&wp),
                opt_ptr(&b),
                ptr(&y),
                ptr(&y),
                ptr(&scratch),
            ];
            assert_eq!(call(pare_k_conv, &p.encode(), &bufs, threads), STATUS_OK);
            assert_close(&y, &want, &format!("in place {:?}", p.algorithm()));
        }
    }
}

/// The depthwise kernels' paths: 3x3 and 5x5 with vertical stride 1 or 2 and dilation 1
/// (any horizontal stride or dilation; the specialized kernel), everything else (dilated rows,
/// other sizes, 1-D; the general kernel), every register blocking (8 or 7 rows by 8 columns, 4
/// rows by 16) with row and column tails, widths below, at and above multiples of 8, asymmetric
/// pads, channel multipliers, batch 2, separate residuals and every activation.
#[test]
fn conv_depthwise_paths() {
    let sizes = [
        (1, 9),
        (4, 16),
        (12, 16),
        (7, 7),
        (14, 14),
        (9, 13),
        (28, 28),
        (3, 29),
        (17, 5),
        (8, 24),
        (16, 20),
    ];
    let mut i = 0u64;
    for k in [3, 5] {
        for (sh, sw) in [(1, 1), (2, 2), (1, 2), (2, 1), (1, 3)] {
            for (j, &(h, w)) in sizes.iter().enumerate() {
                let (c, m, n) = (1 + j % 3, 1 + j % 2, 1 + (j / 3) % 2);
                let p = k / 2;
                let pads = if j % 4 == 3 {
                    (0, p + 1, p, 0)
                } else {
                    (p, p, p, p)
                };
                let cs = case(n, c, (h, w), c * m, (k, k))
                    .g(c)
                    .s(sh, sw)
                    .pad(pads.0, pads.1, pads.2, pads.3)
                    .epi(j % 2 == 0, j % 3 != 1, ACTS[(i as usize) % ACTS.len()]);
                if cs.p.validate().is_err() {
                    continue;
                }
                assert_eq!(cs.p.algorithm(), ConvAlgo::Depthwise);
                check(&cs, 5000 + i);
                i += 1;
            }
        }
    }
    // Dilations (columns: specialized kernel; rows: general), other kernel sizes, 1-D.
    let others = [
        case(1, 3, (13, 17), 3, (3, 3)).d(1, 2).pad(1, 2, 1, 2),
        case(1, 3, (13, 17), 6, (5, 5))
            .d(1, 3)
            .s(2, 1)
            .pad(2, 6, 2, 6),
        case(2, 2, (13, 17), 2, (3, 3)).d(2, 1).pad(2, 1, 2, 1),
        case(1, 4, (11, 30), 4, (3, 3))
            .d(2, 2)
            .s(2, 2)
            .pad(2, 2, 2, 2),
        case(1, 3, (10, 19), 3, (3, 5)).pad(1, 2, 1, 2),
        case(1, 3, (10, 19), 3, (7, 7)).pad(3, 3, 3, 3),
        case(1, 2, (6, 6), 2, (1, 1)),
        case(1, 3, (9, 9), 3, (3, 3)).s(3, 3).pad(1, 1, 1, 1),
        case(2, 2, (23, 112), 2, (3, 3)).pad(1, 1, 1, 1),
        case(1, 2, (56, 56), 4, (5, 5)).s(2, 2).pad(2, 2, 2, 2),
    ];
    for (j, c) in others.into_iter().enumerate() {
        let gc = c.p.c_in;
        let c = c.g(gc).epi(true, j % 2 == 0, ACTS[j % ACTS.len()]);
        check(&c, 6000 + j as u64);
    }
    for (j, l) in [1, 5, 8, 9, 40].into_iter().enumerate() {
        let c = Case::one_d(2, 3, l + 2, 6, 3).g(3).pad(0, 1, 0, 1).epi(
            true,
            true,
            ACTS[j % ACTS.len()],
        );
        check(&c, 6100 + j as u64);
    }
}

/// Depthwise with the residual in place (`y` holds it) on every depthwise kernel path and row /
/// column tail, 1 and 3 threads.
#[test]
fn conv_depthwise_in_place_residual() {
    for (j, c) in [
        case(1, 4, (7, 7), 4, (3, 3)).pad(1, 1, 1, 1),
        case(2, 3, (14, 14), 3, (5, 5)).pad(2, 2, 2, 2),
        case(1, 3, (13, 27), 6, (3, 3)).s(2, 2).pad(1, 1, 1, 1),
        case(1, 3, (4, 20), 3, (3, 3)).pad(1, 1, 1, 1),
        case(1, 3, (30, 30), 3, (5, 5)).s(2, 2).pad(2, 2, 2, 2),
        case(1, 3, (12, 12), 3, (3, 3)).d(2, 2).pad(2, 2, 2, 2),
        case(2, 8, (28, 28), 8, (3, 3)).pad(1, 1, 1, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let gc = c.p.c_in;
        let c = c.g(gc).epi(true, true, ACTS[j % ACTS.len()]);
        let p = c.p;
        let (x, w, b, r) = inputs(&p, 50 + j as u64);
        let want = c.reference(&x, &w, &b, &r);
        let wp = conv_prepare_weights(&p, &w);
        for threads in [1, 3] {
            let y = r.clone().unwrap();
            let bufs = [
                ptr(&x),
                ptr(&wp),
                opt_ptr(&b),
                ptr(&y),
                ptr(&y),
                std::ptr::null_mut(),
            ];
            assert_eq!(call(pare_k_conv, &p.encode(), &bufs, threads), STATUS_OK);
            assert_close(&y, &want, &format!("in place {c:?}, {threads} threads"));
        }
    }
}

/// The Direct algorithm: the ocr-det shapes (96 -> 24 3x3 at several sizes, the 3 -> 16 stride-2
/// stem), every output width from 1 to 35 (16-column tiles, tails of more and at most 8
/// columns), channel counts around the 6- and 4-channel blocks, strides (1 or 2 per axis),
/// asymmetric and large pads, batch 2, bias, residual and every activation.
#[test]
fn conv_direct_paths() {
    use Activation::*;
    let direct = |c: Case, seed: u64| {
        assert_eq!(c.p.algorithm(), ConvAlgo::Direct, "{c:?}");
        check(&c, seed);
    };
    let mut seed = 5000;
    for (h, w) in [(16, 24), (8, 12), (4, 6)] {
        seed += 1;
        direct(
            case(1, 96, (h, w), 24, (3, 3))
                .pad(1, 1, 1, 1)
                .epi(true, false, Relu),
            seed,
        );
    }
    direct(
        case(1, 3, (64, 96), 16, (3, 3))
            .s(2, 2)
            .pad(1, 1, 1, 1)
            .epi(true, false, HardSwish),
        5010,
    );
    direct(
        case(2, 3, (33, 35), 16, (3, 3))
            .s(2, 2)
            .pad(1, 1, 1, 1)
            .epi(true, true, Relu),
        5011,
    );
    direct(
        case(1, 3, (30, 31), 70, (7, 7))
            .s(2, 2)
            .pad(3, 3, 3, 3)
            .epi(true, false, Identity),
        5012,
    );
    for w in 1..=35 {
        for c_out in [1, 4, 5, 7, 13] {
            seed += 1;
            let act = ACTS[(w + c_out) % ACTS.len()];
            direct(
                // Tall enough (over 256 positions) that Rows does not take it.
                case(1 + w % 2, 5, (3 + w % 4 + 300 / w, w), c_out, (3, 3))
                    .pad(1, 1, 1, 1)
                    .epi(w % 3 != 0, w % 2 == 0, act),
                seed,
            );
        }
    }
    for (s, k, pads) in [
        ((1, 2), (3, 3), (1, 1, 1, 1)),
        ((2, 1), (3, 3), (0, 2, 1, 0)),
        ((2, 2), (5, 5), (2, 2, 2, 2)),
        ((1, 1), (2, 4), (0, 3, 1, 0)),
        ((2, 2), (3, 2), (4, 1, 0, 5)),
        ((1, 1), (3, 1), (1, 0, 1, 0)),
        ((1, 1), (1, 3), (0, 1, 0, 1)),
    ] {
        for &act in ACTS.iter() {
            seed += 1;
            direct(
                case(2, 6, (13, 19), 11, k)
                    .s(s.0, s.1)
                    .pad(pads.0, pads.1, pads.2, pads.3)
                    .epi(true, seed % 2 == 0, act),
                seed,
            );
        }
    }
    // The same shapes just past the rule stay on Im2col.
    for c in [
        case(1, 8, (13, 19), 65, (3, 3)).pad(1, 1, 1, 1),
        case(1, 8, (13, 19), 24, (3, 3)).d(1, 2).pad(1, 1, 1, 1),
        case(1, 8, (13, 19), 24, (3, 3)).s(3, 3).pad(1, 1, 1, 1),
    ] {
        assert_eq!(c.p.algorithm(), ConvAlgo::Im2col, "{c:?}");
        check(&c.epi(true, true, Relu), 5999);
    }
}

#[test]
fn conv_algorithm_choice() {
    assert_eq!(
        case(1, 8, (9, 9), 8, (3, 3)).g(8).p.algorithm(),
        ConvAlgo::Depthwise
    );
    assert_eq!(
        case(1, 8, (9, 9), 16, (3, 3)).g(8).p.algorithm(),
        ConvAlgo::Depthwise
    );
    assert_eq!(
        case(1, 8, (9, 9), 16, (1, 1)).p.algorithm(),
        ConvAlgo::Pointwise
    );
    assert_eq!(
        case(1, 8, (9, 9), 16, (1, 1)).s(2, 2).p.algorithm(),
        ConvAlgo::Im2col
    );
    assert_eq!(
        case(1, 8, (9, 9), 16, (3, 3)).p.algorithm(),
        ConvAlgo::Direct
    );
    // Many output channels (and more than 4 input channels): Im2col.
    assert_eq!(
        case(1, 8, (9, 9), 65, (3, 3)).p.algorithm(),
        ConvAlgo::Im2col
    );
    // Stems (3 input channels) take Direct whatever the output channels.
    assert_eq!(
        case(1, 3, (64, 64), 96, (3, 3))
            .s(2, 2)
            .pad(1, 1, 1, 1)
            .p
            .algorithm(),
        ConvAlgo::Direct
    );
    // Dilation, stride 3, groups and 1-D stay on Im2col.
    for c in [
        case(1, 8, (30, 30), 16, (3, 3)).d(2, 1),
        case(1, 8, (60, 30), 16, (3, 3)).s(3, 1),
        case(1, 8, (30, 30), 16, (3, 3)).g(2),
        Case::one_d(1, 8, 40, 16, 3),
    ] {
        assert_eq!(c.p.algorithm(), ConvAlgo::Im2col, "{c:?}");
    }
    // 4 output positions per image: 16-column panels would be 3/4 padding.
    assert_eq!(
        Case::one_d(4, 1, 640, 258, 256).s(1, 128).p.algorithm(),
        ConvAlgo::Rows
    );
    assert_eq!(
        case(1, 64, (2, 2), 64, (1, 1)).p.algorithm(),
        ConvAlgo::Rows
    );
    // 7x7 = 49 positions fill 49/64 of the panels: not worth the swap.
    assert_eq!(
        case(1, 64, (7, 7), 128, (3, 3))
            .pad(1, 1, 1, 1)
            .p
            .algorithm(),
        ConvAlgo::Im2col
    );
    assert_eq!(case(1, 8, (9, 9), 16, (1, 1)).p.scratch_bytes(), 0);
    assert!(case(1, 8, (9, 9), 65, (3, 3)).p.scratch_bytes() >= 8 * 9 * 49 * 4);
    // Direct: the padded input planes; weights in blocks of 6 channels.
    let d = case(1, 8, (9, 9), 16, (3, 3)).pad(1, 1, 1, 1).p;
    assert!(d.scratch_bytes() >= 8 * 11 * 11 * 4);
    assert_eq!(d.prepared_len(), 18 * 8 * 9);
}

#[test]
fn conv_rejects_bad_calls() {
    let p = case(1, 4, (6, 6), 4, (3, 3))
        .pad(1, 1, 1, 1)
        .epi(true, false, Activation::Relu)
        .p;
    let x = fill(p.x_len(), 1);
    let w = fill(p.w_len(), 2);
    let b = fill(4, 3);
    let y = vec![0.0f32; p.y_len()];
    let scratch = vec![0u8; p.scratch_bytes()];
    let good = [
        ptr(&x),
        ptr(&w),
        ptr(&b),
        std::ptr::null_mut(),
        ptr(&y),
        ptr(&scratch),
    ];
    assert_eq!(call(pare_k_conv, &p.encode(), &good, 1), STATUS_OK);
    // Missing bias, missing x, missing scratch.
    let mut bad = good;
    bad[2] = std::ptr::null_mut();
    assert_eq!(call(pare_k_conv, &p.encode(), &bad, 1), STATUS_NULL);
    let mut bad = good;
    bad[0] = std::ptr::null_mut();
    assert_eq!(call(pare_k_conv, &p.encode(), &bad, 1), STATUS_NULL);
    let mut bad = good;
    bad[5] = std::ptr::null_mut();
    assert_eq!(call(pare_k_conv, &p.encode(), &bad, 1), STATUS_NULL);
    // Foreign / corrupted parameter blocks.
    let mut words = p.encode();
    words[0] += 1;
    assert_eq!(call(pare_k_conv, &words, &good, 1), STATUS_PARAMS);
    let mut words = p.encode();
    words[16] = 3; // group 3 does not divide 4 channels
    assert_eq!(call(pare_k_conv, &words, &good, 1), STATUS_PARAMS);
    let mut words = p.encode();
    words[19] = 42; // unknown activation
    assert_eq!(call(pare_k_conv, &words, &good, 1), STATUS_PARAMS);
    assert_eq!(ConvParams::decode(&p.encode()[..5]), None);
    // Safe API: presence flags and lengths.
    let mut yy = y.clone();
    let mut sc = scratch.clone();
    let e = conv(&p, &x, &w, None, None, &mut yy, &mut sc, 1).unwrap_err();
    assert_eq!(e.status, STATUS_PARAMS);
    let e = conv(&p, &x[1..], &w, Some(&b), None, &mut yy, &mut sc, 1).unwrap_err();
    assert_eq!(e.status, STATUS_PARAMS);
    let e = conv(&p, &x, &w, Some(&b), None, &mut yy, &mut [], 1).unwrap_err();
    assert_eq!(e.status, STATUS_PARAMS);
    let mut kernel_too_big = p;
    kernel_too_big.kh = 9;
    assert!(kernel_too_big.validate().is_err());
}

// ---------------------------------------------------------------------------------------------
// ConvTranspose
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct TCase {
    p: ConvTransposeParams,
    pads: [usize; 4],
    out_pad: [usize; 2],
    one_d: bool,
}

#[allow(clippy::too_many_arguments)]
fn tcase(
    n: usize,
    c_in: usize,
    hw: (usize, usize),
    c_out: usize,
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
    pads: [usize; 4],
    out_pad: [usize; 2],
    group: usize,
) -> TCase {
    let oh = ConvTransposeParams::natural_out(hw.0, k.0, s.0, d.0, pads[0], pads[2], out_pad[0])
        .unwrap();
    let ow = ConvTransposeParams::natural_out(hw.1, k.1, s.1, d.1, pads[1], pads[3], out_pad[1])
        .unwrap();
    TCase {
        p: ConvTransposeParams {
            n,
            c_in,
            h: hw.0,
            w: hw.1,
            c_out,
            kh: k.0,
            kw: k.1,
            stride_h: s.0,
            stride_w: s.1,
            dilation_h: d.0,
            dilation_w: d.1,
            pad_top: pads[0],
            pad_left: pads[1],
            out_h: oh,
            out_w: ow,
            group,
            has_bias: false,
            activation: Activation::Identity,
        },
        pads,
        out_pad,
        one_d: false,
    }
}

fn check_t(c: &TCase, seed: u64) {
    let p = &c.p;
    assert_eq!(ConvTransposeParams::decode(&p.encode()), Some(*p));
    let x = fill(p.x_len(), seed);
    let w = fill(p.w_len(), seed + 1);
    let b = p.has_bias.then(|| fill(p.c_out, seed + 2));
    let (xs, ws, attrs) = if c.one_d {
        (
            vec![p.n, p.c_in, p.w],
            vec![p.c_in, p.c_out / p.group, p.kw],
            format!(
                "strides=[{}], dilations=[{}], pads=[{},{}], output_padding=[{}], group={}",
                p.stride_w, p.dilation_w, c.pads[1], c.pads[3], c.out_pad[1], p.group
            ),
        )
    } else {
        (
            vec![p.n, p.c_in, p.h, p.w],
            vec![p.c_in, p.c_out / p.group, p.kh, p.kw],
            format!(
                "strides=[{},{}], dilations=[{},{}], pads=[{},{},{},{}], output_padding=[{},{}], group={}",
                p.stride_h,
                p.stride_w,
                p.dilation_h,
                p.dilation_w,
                c.pads[0],
                c.pads[1],
                c.pads[2],
                c.pads[3],
                c.out_pad[0],
                c.out_pad[1],
                p.group
            ),
        )
    };
    let mut ins = vec![
        Tensor::from_vec(xs.clone(), x.clone()),
        Tensor::from_vec(ws.clone(), w.clone()),
    ];
    let (bdecl, barg) = match &b {
        Some(b) => {
            ins.push(Tensor::from_vec(vec![p.c_out], b.clone()));
            (format!(", %b: f32[{}]", p.c_out), ", %b")
        }
        None => (String::new(), ""),
    };
    let src = format!(
        "graph @main(%x: f32[{}], %w: f32[{}]{bdecl}) -> (%y) {{ %y = ConvTranspose(%x, %w{barg}) {{{attrs}}} }}",
        dims(&xs),
        dims(&ws)
    );
    let out = interp(&src, &ins);
    assert_eq!(out.shape().iter().product::<usize>(), p.y_len(), "{src}");
    let mut want = out.to_vec::<f32>().unwrap();
    want.iter_mut().for_each(|v| *v = act_ref(p.activation, *v));
    let wp = conv_transpose_prepare_weights(p, &w);
    for threads in [1, 3] {
        let y = vec![f32::NAN; p.y_len()];
        let scratch = vec![0u8; p.scratch_bytes()];
        let bufs = [ptr(&x), ptr(&wp), opt_ptr(&b), ptr(&y), ptr(&scratch)];
        let st = call(pare_k_conv_transpose, &p.encode(), &bufs, threads);
        assert_eq!(st, STATUS_OK, "{c:?}");
        assert_close(&y, &want, &format!("{c:?}, {threads} threads"));
    }
    let mut y = vec![f32::NAN; p.y_len()];
    let mut scratch = vec![0u8; p.scratch_bytes()];
    conv_transpose(p, &x, &wp, b.as_deref(), &mut y, &mut scratch, 2).unwrap();
    assert_close(&y, &want, &format!("{c:?}, safe API"));
}

#[test]
fn conv_transpose_shapes() {
    let z = [0, 0, 0, 0];
    let one = [1, 1, 1, 1];
    let cases = vec![
        tcase(1, 32, (24, 24), 32, (4, 4), (2, 2), (1, 1), one, [0, 0], 1),
        tcase(1, 4, (3, 3), 6, (2, 2), (2, 2), (1, 1), z, [0, 0], 2),
        tcase(1, 3, (5, 4), 2, (3, 3), (1, 1), (1, 1), z, [0, 0], 1),
        tcase(
            2,
            4,
            (5, 6),
            4,
            (3, 3),
            (2, 2),
            (1, 1),
            [1, 1, 1, 1],
            [1, 1],
            1,
        ),
        tcase(
            1,
            6,
            (7, 5),
            9,
            (4, 4),
            (2, 2),
            (1, 1),
            [1, 1, 1, 1],
            [0, 0],
            3,
        ),
        tcase(
            1,
            2,
            (4, 4),
            3,
            (3, 2),
            (3, 2),
            (2, 1),
            [0, 1, 2, 0],
            [1, 0],
            1,
        ),
        tcase(
            1,
            8,
            (16, 16),
            4,
            (4, 4),
            (2, 2),
            (1, 1),
            [1, 1, 1, 1],
            [0, 0],
            1,
        ),
        tcase(1, 64, (20, 20), 32, (2, 2), (2, 2), (1, 1), z, [0, 0], 1),
        tcase(1, 5, (1, 1), 3, (3, 3), (1, 1), (1, 1), z, [0, 0], 1),
        tcase(
            1,
            4,
            (6, 6),
            4,
            (3, 3),
            (1, 1),
            (2, 2),
            [2, 2, 2, 2],
            [0, 0],
            4,
        ),
    ];
    let mut i = 0;
    for mut c in cases {
        for (bias, act) in [
            (false, Activation::Identity),
            (true, Activation::Relu),
            (true, Activation::Sigmoid),
        ] {
            c.p.has_bias = bias;
            c.p.activation = act;
            check_t(&c, 300 + i);
            i += 1;
        }
    }
    // 1-D
    let mut c = tcase(
        2,
        4,
        (1, 11),
        6,
        (1, 3),
        (1, 2),
        (1, 1),
        [0, 1, 0, 1],
        [0, 1],
        2,
    );
    c.one_d = true;
    c.p.has_bias = true;
    check_t(&c, 99);
}

#[test]
fn conv_transpose_random_shapes() {
    let mut rng = Rng(77);
    for i in 0..60 {
        let group = 1 + rng.below(2);
        let c_in = group * (1 + rng.below(4));
        let c_out = group * (1 + rng.below(4));
        let k = (1 + rng.below(4), 1 + rng.below(4));
        let s = (1 + rng.below(3), 1 + rng.below(3));
        let d = (1 + rng.below(2), 1 + rng.below(2));
        let pads = [rng.below(2), rng.below(2), rng.below(2), rng.below(2)];
        let out_pad = [rng.below(s.0.min(d.0 * 2)), rng.below(s.1.min(d.1 * 2))];
        let hw = (1 + rng.below(7), 1 + rng.below(9));
        let ok = |x: usize, k: usize, s: usize, d: usize, a: usize, b: usize, o: usize| {
            ConvTransposeParams::natural_out(x, k, s, d, a, b, o).is_some_and(|v| v > 0)
        };
        if !ok(hw.0, k.0, s.0, d.0, pads[0], pads[2], out_pad[0])
            || !ok(hw.1, k.1, s.1, d.1, pads[1], pads[3], out_pad[1])
        {
            continue;
        }
        let mut c = tcase(
            1 + rng.below(2),
            c_in,
            hw,
            c_out,
            k,
            s,
            d,
            pads,
            out_pad,
            group,
        );
        c.p.has_bias = rng.below(2) == 0;
        c.p.activation = ACTS[rng.below(8)];
        check_t(&c, 5000 + i);
    }
}
