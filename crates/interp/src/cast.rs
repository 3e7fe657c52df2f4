//! Cast between every pair of dtypes, including 8-bit and 4-bit floats (round to nearest even,
//! optional saturation), E8M0 (exponent only, with a rounding mode) and packed 4- and 2-bit
//! integers (wrapping).

use crate::Value;
use half::{bf16, f16};
use ndarray::ArrayD;
use pare_ir::DType;

/// A small float format: exponent/mantissa widths, bias, and its special-value conventions.
#[derive(Clone, Copy)]
pub(crate) struct MiniFloat {
    man: u32,
    bias: i32,
    /// Largest finite value.
    max: f64,
    /// Has ±infinity (E5M2).
    inf: bool,
    /// "Unsigned zero" formats: 0x80 is the only NaN, no negative zero.
    uz: bool,
    /// NaN code for positive NaN (negative NaN sets the sign bit), when not `uz`.
    nan: u8,
    /// Total bits (8, or 4 for E2M1).
    bits: u32,
}

pub(crate) const E4M3FN: MiniFloat = MiniFloat {
    man: 3,
    bias: 7,
    max: 448.0,
    inf: false,
    uz: false,
    nan: 0x7F,
    bits: 8,
};
pub(crate) const E4M3FNUZ: MiniFloat = MiniFloat {
    man: 3,
    bias: 8,
    max: 240.0,
    inf: false,
    uz: true,
    nan: 0x80,
    bits: 8,
};
pub(crate) const E5M2: MiniFloat = MiniFloat {
    man: 2,
    bias: 15,
    max: 57344.0,
    inf: true,
    uz: false,
    nan: 0x7E,
    bits: 8,
};
pub(crate) const E5M2FNUZ: MiniFloat = MiniFloat {
    man: 2,
    bias: 16,
    max: 57344.0,
    inf: false,
    uz: true,
    nan: 0x80,
    bits: 8,
};
pub(crate) const E2M1: MiniFloat = MiniFloat {
    man: 1,
    bias: 1,
    max: 6.0,
    inf: false,
    uz: false,
    nan: 0,
    bits: 4,
};

impl MiniFloat {
    fn sign_bit(&self) -> u8 {
        1 << (self.bits - 1)
    }

    /// Decodes a code.
    pub(crate) fn decode(&self, code: u8) -> f64 {
        let sign = code & self.sign_bit() != 0;
        let mag = code & (self.sign_bit() - 1);
        if self.uz && code == 0x80 {
            return f64::NAN;
        }
        let e = (mag >> self.man) as i32;
        let m = (mag & ((1 << self.man) - 1)) as f64;
        let ebits = self.bits - 1 - self.man;
        let emax_field = (1i32 << ebits) - 1;
        if !self.uz && self.bits == 8 {
            if self.inf && e == emax_field {
                return match (m == 0.0, sign) {
                    (true, false) => f64::INFINITY,
                    (true, true) => f64::NEG_INFINITY,
                    _ => f64::NAN,
                };
            }
            if !self.inf && e == emax_field && m as u32 == (1 << self.man) - 1 {
                return f64::NAN;
            }
        }
        let scale = (1u64 << self.man) as f64;
        let v = if e == 0 {
            m / scale * 2f64.powi(1 - self.bias)
        } else {
            (1.0 + m / scale) * 2f64.powi(e - self.bias)
        };
        if sign {
            -v
        } else {
            v
        }
    }

    /// Encodes with round-to-nearest-even. `saturate`: out-of-range values (and infinities)
    /// become ±max; otherwise ±inf where the format has it, else NaN.
    pub(crate) fn encode(&self, x: f64, saturate: bool) -> u8 {
        let sbit = self.sign_bit();
        let neg = x.is_sign_negative();
        if x.is_nan() {
            if self.bits == 4 {
                // No NaN in E2M1: ml_dtypes yields a zero with the sign bit flipped.
                return if neg { 0 } else { sbit };
            }
            return if self.uz {
                0x80
            } else if neg {
                self.nan | sbit
            } else {
                self.nan
            };
        }
        let sign = if neg { sbit } else { 0 };
        let overflow = |sign: u8| -> u8 {
            if saturate || self.bits == 4 {
                self.encode_mag(self.max) | if self.uz && sign != 0 { 0x80 } else { sign }
            } else if self.inf {
                (0x7C) | sign
            } else if self.uz {
                0x80
            } else {
                self.nan | sign
            }
        };
        let a = x.abs();
        if a.is_infinite() {
            return overflow(sign);
        }
        // Round to the quantum of the binade (or the subnormal quantum).
        let min_normal_exp = 1 - self.bias;
        let e = if a == 0.0 {
            min_normal_exp
        } else {
            (a.log2().floor() as i32).max(min_normal_exp)
        };
        // Guard log2 imprecision.
        let e = if a != 0.0 && 2f64.powi(e) > a && e > min_normal_exp {
            e - 1
        } else {
            e
        };
        let e = if a != 0.0 && 2f64.powi(e + 1) <= a {
            e + 1
        } else {
            e
        };
        let quantum = 2f64.powi(e - self.man as i32);
        let q = (a / quantum).round_ties_even() * quantum;
        if q > self.max {
            return overflow(sign);
        }
        if q == 0.0 {
            return if self.uz { 0 } else { sign };
        }
        let code = self.encode_mag(q);
        if self.uz && code == 0 {
            return 0;
        }
        code | sign
    }

    /// Code of an exactly representable non-negative magnitude.
    fn encode_mag(&self, q: f64) -> u8 {
        let min_normal_exp = 1 - self.bias;
        let scale = (1u64 << self.man) as f64;
        if q < 2f64.powi(min_normal_exp) {
            return (q / 2f64.powi(min_normal_exp) * scale).round() as u8;
        }
        let mut e = q.log2().floor() as i32;
        if 2f64.powi(e) > q {
            e -= 1;
        }
        if 2f64.powi(e + 1) <= q {
            e += 1;
        }
        let m = ((q / 2f64.powi(e) - 1.0) * scale).round() as u8;
        (((e + self.bias) as u8) << self.man) | m
    }
}

/// Rounding of the mantissa when converting to E8M0 (Cast's `round_mode` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoundMode {
    /// Toward +infinity in magnitude: any nonzero mantissa bumps the exponent (the default).
    #[default]
    Up,
    /// Truncate the mantissa.
    Down,
    /// To nearest, ties to even.
    Nearest,
}

impl RoundMode {
    /// Parses the ONNX attribute value (`"up"`, `"down"`, `"nearest"`).
    pub fn parse(s: &str) -> Result<RoundMode, String> {
        match s {
            "up" => Ok(RoundMode::Up),
            "down" => Ok(RoundMode::Down),
            "nearest" => Ok(RoundMode::Nearest),
            o => Err(format!("unsupported round_mode {o:?}")),
        }
    }
}

/// Decodes an E8M0 code: `2^(c - 127)`, with 0xFF NaN.
pub(crate) fn e8m0_decode(c: u8) -> f64 {
    if c == 0xFF {
        f64::NAN
    } else {
        2f64.powi(c as i32 - 127)
    }
}

/// Encodes to E8M0 as the ONNX reference does: the value is rounded to f32, its sign dropped,
/// and its biased exponent kept, rounded per `mode` from the mantissa bits. NaN and ±inf become
/// 0xFF (NaN); `saturate` stops rounding up past the largest exponent (0xFE), which would
/// otherwise give NaN.
pub(crate) fn e8m0_encode(x: f64, saturate: bool, mode: RoundMode) -> u8 {
    let bits = (x as f32).to_bits();
    let exp = (bits >> 23) & 0xFF;
    if exp == 0xFF {
        return 0xFF;
    }
    let up = match mode {
        RoundMode::Up => bits & 0x7F_FFFF != 0,
        RoundMode::Down => false,
        RoundMode::Nearest => {
            let guard = bits & 0x40_0000 != 0;
            let round = bits & 0x20_0000 != 0;
            let sticky = bits & 0x1F_FFFF != 0;
            guard && (round || sticky || exp > 0)
        }
    };
    let up = up && !(saturate && exp == 0xFE);
    (exp + up as u32) as u8
}

fn mini_of(d: DType) -> Option<MiniFloat> {
    Some(match d {
        DType::F8E4M3FN => E4M3FN,
        DType::F8E4M3FNUZ => E4M3FNUZ,
        DType::F8E5M2 => E5M2,
        DType::F8E5M2FNUZ => E5M2FNUZ,
        DType::F4E2M1 => E2M1,
        _ => return None,
    })
}

/// Source elements in a lossless intermediate form.
enum Src {
    F(ArrayD<f64>),
    I(ArrayD<i64>),
    U(ArrayD<u64>),
    B(ArrayD<bool>),
    S(ArrayD<String>),
}

fn parse_float(s: &str) -> f64 {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => f64::NAN,
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => t.parse::<f64>().unwrap_or(f64::NAN),
    }
}

fn source(v: &Value) -> Src {
    match v {
        Value::F32(a) => Src::F(a.mapv(|x| x as f64)),
        Value::F64(a) => Src::F(a.clone()),
        Value::F16(a) => Src::F(a.mapv(|x| x.to_f64())),
        Value::BF16(a) => Src::F(a.mapv(|x| x.to_f64())),
        Value::I8(a) | Value::I4(a) | Value::I2(a) => Src::I(a.mapv(|x| x as i64)),
        Value::I16(a) => Src::I(a.mapv(|x| x as i64)),
        Value::I32(a) => Src::I(a.mapv(|x| x as i64)),
        Value::I64(a) => Src::I(a.clone()),
        Value::U8(a) | Value::U4(a) | Value::U2(a) => Src::U(a.mapv(|x| x as u64)),
        Value::U16(a) => Src::U(a.mapv(|x| x as u64)),
        Value::U32(a) => Src::U(a.mapv(|x| x as u64)),
        Value::U64(a) => Src::U(a.clone()),
        Value::Bool(a) => Src::B(a.clone()),
        Value::Str(a) => Src::S(a.clone()),
        Value::F8E4M3FN(a) => Src::F(a.mapv(|c| E4M3FN.decode(c))),
        Value::F8E4M3FNUZ(a) => Src::F(a.mapv(|c| E4M3FNUZ.decode(c))),
        Value::F8E5M2(a) => Src::F(a.mapv(|c| E5M2.decode(c))),
        Value::F8E5M2FNUZ(a) => Src::F(a.mapv(|c| E5M2FNUZ.decode(c))),
        Value::F4E2M1(a) => Src::F(a.mapv(|c| E2M1.decode(c))),
        Value::F8E8M0(a) => Src::F(a.mapv(e8m0_decode)),
    }
}

fn float_to_string(x: f64, d: DType) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "INF".into() } else { "-INF".into() };
    }
    match d {
        DType::F32 | DType::F16 | DType::BF16 => format!("{}", x as f32),
        _ => format!("{x}"),
    }
}

/// Casts `v` to dtype `to`. `saturate` applies to 8-bit float targets (ONNX Cast semantics);
/// E8M0 targets round up.
pub fn cast(v: &Value, to: DType, saturate: bool) -> Result<Value, String> {
    cast_with(v, to, saturate, RoundMode::Up)
}

/// Like [`cast`], with the rounding mode for E8M0 targets (Cast's `round_mode`).
pub fn cast_with(v: &Value, to: DType, saturate: bool, round: RoundMode) -> Result<Value, String> {
    if v.dtype() == to {
        return Ok(v.clone());
    }
    // Fast paths for the most common casts.
    match (v, to) {
        (Value::F32(a), DType::F16) => return Ok(Value::F16(a.mapv(f16::from_f32))),
        (Value::F16(a), DType::F32) => return Ok(Value::F32(a.mapv(f16::to_f32))),
        (Value::F32(a), DType::BF16) => return Ok(Value::BF16(a.mapv(bf16::from_f32))),
        (Value::BF16(a), DType::F32) => return Ok(Value::F32(a.mapv(bf16::to_f32))),
        (Value::I64(a), DType::F32) => return Ok(Value::F32(a.mapv(|x| x as f32))),
        (Value::I32(a), DType::F32) => return Ok(Value::F32(a.mapv(|x| x as f32))),
        (Value::Bool(a), DType::F32) => return Ok(Value::F32(a.mapv(|x| x as u8 as f32))),
        (Value::I64(a), DType::I32) => return Ok(Value::I32(a.mapv(|x| x as i32))),
        (Value::I32(a), DType::I64) => return Ok(Value::I64(a.mapv(|x| x as i64))),
        _ => {}
    }
    let src_dtype = v.dtype();
    let src = source(v);
    if to == DType::String {
        return Ok(Value::Str(match src {
            Src::F(a) => a.mapv(|x| float_to_string(x, src_dtype)),
            Src::I(a) => a.mapv(|x| x.to_string()),
            Src::U(a) => a.mapv(|x| x.to_string()),
            Src::B(a) => a.mapv(|x| {
                if x {
                    "True".to_string()
                } else {
                    "False".to_string()
                }
            }),
            Src::S(a) => a,
        }));
    }
    // Strings parse to float (or integer, for integer targets).
    let src = match src {
        Src::S(a) => {
            if to.is_int() {
                let parsed: Option<ArrayD<i64>> = {
                    let v: Option<Vec<i64>> =
                        a.iter().map(|s| s.trim().parse::<i64>().ok()).collect();
                    v.map(|v| ArrayD::from_shape_vec(a.raw_dim(), v).expect("same element count"))
                };
                match parsed {
                    Some(p) => Src::I(p),
                    None => Src::F(a.mapv(|s| parse_float(&s))),
                }
            } else if to == DType::Bool {
                Src::B(a.mapv(|s| {
                    let t = s.trim();
                    t.eq_ignore_ascii_case("true")
                        || parse_float(t).is_nan()
                        || parse_float(t) != 0.0
                }))
            } else {
                Src::F(a.mapv(|s| parse_float(&s)))
            }
        }
        s => s,
    };
    macro_rules! to_int {
        ($t:ty) => {
            match &src {
                Src::F(a) => a.mapv(|x| {
                    if x >= 9.2e18 {
                        x as u64 as $t
                    } else {
                        x as i64 as $t
                    }
                }),
                Src::I(a) => a.mapv(|x| x as $t),
                Src::U(a) => a.mapv(|x| x as $t),
                Src::B(a) => a.mapv(|x| x as u8 as $t),
                Src::S(_) => unreachable!("strings parsed above"),
            }
        };
    }
    macro_rules! to_f64 {
        () => {
            match &src {
                Src::F(a) => a.clone(),
                Src::I(a) => a.mapv(|x| x as f64),
                Src::U(a) => a.mapv(|x| x as f64),
                Src::B(a) => a.mapv(|x| x as u8 as f64),
                Src::S(_) => unreachable!("strings parsed above"),
            }
        };
    }
    Ok(match to {
        DType::F64 => Value::F64(to_f64!()),
        DType::F32 => Value::F32(to_f64!().mapv(|x| x as f32)),
        DType::F16 => Value::F16(to_f64!().mapv(f16::from_f64)),
        DType::BF16 => Value::BF16(match &src {
            // Round once from the f32 value when the source is f32-exact.
            Src::F(a) if matches!(src_dtype, DType::F32 | DType::F16) => {
                a.mapv(|x| bf16::from_f32(x as f32))
            }
            _ => to_f64!().mapv(bf16::from_f64),
        }),
        DType::I8 => Value::I8(to_int!(i8)),
        DType::U8 => Value::U8(to_int!(u8)),
        DType::I16 => Value::I16(to_int!(i16)),
        DType::U16 => Value::U16(to_int!(u16)),
        DType::I32 => Value::I32(to_int!(i32)),
        DType::U32 => Value::U32(to_int!(u32)),
        DType::I64 => Value::I64(to_int!(i64)),
        DType::U64 => Value::U64(to_int!(u64)),
        DType::I4 => Value::I4(to_int!(i8).mapv(|x| (x << 4) >> 4)),
        DType::U4 => Value::U4(to_int!(u8).mapv(|x| x & 0xF)),
        DType::I2 => Value::I2(to_int!(i8).mapv(|x| (x << 6) >> 6)),
        DType::U2 => Value::U2(to_int!(u8).mapv(|x| x & 0x3)),
        DType::F8E8M0 => Value::F8E8M0(to_f64!().mapv(|x| e8m0_encode(x, saturate, round))),
        DType::Bool => Value::Bool(match &src {
            Src::F(a) => a.mapv(|x| x != 0.0),
            Src::I(a) => a.mapv(|x| x != 0),
            Src::U(a) => a.mapv(|x| x != 0),
            Src::B(a) => a.clone(),
            Src::S(_) => unreachable!("strings parsed above"),
        }),
        DType::String => unreachable!("handled above"),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F4E2M1 => {
            let mf = mini_of(to).expect("mini float dtype");
            // Integer sources go through f32 like numpy; floats convert directly.
            let codes = to_f64!().mapv(|x| mf.encode(x, saturate));
            match to {
                DType::F8E4M3FN => Value::F8E4M3FN(codes),
                DType::F8E4M3FNUZ => Value::F8E4M3FNUZ(codes),
                DType::F8E5M2 => Value::F8E5M2(codes),
                DType::F8E5M2FNUZ => Value::F8E5M2FNUZ(codes),
                _ => Value::F4E2M1(codes),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XS: [f64; 10] = [
        1.0,
        1.5,
        3.0,
        0.75,
        -2.5,
        f64::INFINITY,
        f64::NAN,
        0.0,
        3.4e38,
        1.25,
    ];

    fn codes(saturate: bool, mode: RoundMode) -> Vec<u8> {
        XS.iter().map(|&x| e8m0_encode(x, saturate, mode)).collect()
    }

    /// Expected codes from `onnx.numpy_helper.to_float8e8m0`.
    #[test]
    fn e8m0_matches_reference() {
        let up = [127, 128, 129, 127, 129, 255, 255, 0, 254, 128];
        assert_eq!(codes(true, RoundMode::Up), up);
        let mut up_ns = up;
        up_ns[8] = 255;
        assert_eq!(codes(false, RoundMode::Up), up_ns);
        let down = [127, 127, 128, 126, 128, 255, 255, 0, 254, 127];
        assert_eq!(codes(true, RoundMode::Down), down);
        assert_eq!(codes(false, RoundMode::Down), down);
        let near = [127, 128, 129, 127, 128, 255, 255, 0, 254, 127];
        assert_eq!(codes(true, RoundMode::Nearest), near);
        let mut near_ns = near;
        near_ns[8] = 255;
        assert_eq!(codes(false, RoundMode::Nearest), near_ns);
        assert_eq!(e8m0_decode(127), 1.0);
        assert_eq!(e8m0_decode(130), 8.0);
        assert!(e8m0_decode(255).is_nan());
        assert!(RoundMode::parse("sideways").is_err());
    }

    #[test]
    fn two_bit_ints_wrap_and_round_trip() {
        let v = Value::I64(ndarray::arr1(&[-3i64, -2, -1, 0, 1, 2, 5]).into_dyn());
        let i2 = cast(&v, DType::I2, true).unwrap();
        assert_eq!(i2.to_i64_vec().unwrap(), [1, -2, -1, 0, 1, -2, 1]);
        let u2 = cast(&v, DType::U2, true).unwrap();
        assert_eq!(u2.to_i64_vec().unwrap(), [1, 2, 3, 0, 1, 2, 1]);
        for x in [i2, u2] {
            let t = x.to_tensor();
            assert_eq!(t.raw().len(), 2);
            assert_eq!(Value::from_tensor(&t).unwrap(), x);
        }
    }
}
