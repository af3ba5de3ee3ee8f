//! Sprig's numbers: conversions as `spf13/cast` does them (`int "0x1f"` is 31, a bad string
//! is 0), int64 arithmetic (`add`, `div`...), and the float variants (`addf`...), which Sprig
//! computes in decimal (shopspring/decimal), so `addf 0.1 0.2` is 0.3.

use super::{CallError, FnResult, Registry, Ty, str_arg};
use crate::Value;

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("int", &[Any], None, |_, a| Ok(Value::Int(to_int64(&a[0]))));
    r.add("int64", &[Any], None, |_, a| {
        Ok(Value::Int(to_int64(&a[0])))
    });
    r.add("float64", &[Any], None, |_, a| {
        Ok(Value::Float(to_float64(&a[0])))
    });
    r.add("atoi", &[Str], None, |_, a| {
        Ok(Value::Int(str_arg(&a[0]).parse::<i64>().unwrap_or(0)))
    });
    r.add("toDecimal", &[Any], None, |_, a| {
        Ok(Value::Int(
            i64::from_str_radix(&a[0].to_string(), 8).unwrap_or(0),
        ))
    });
    r.add("add1", &[Any], None, |_, a| {
        Ok(Value::Int(to_int64(&a[0]).wrapping_add(1)))
    });
    r.add("add", &[], Some(Any), |_, a| {
        Ok(Value::Int(
            a.iter().fold(0i64, |s, v| s.wrapping_add(to_int64(v))),
        ))
    });
    r.add("sub", &[Any, Any], None, |_, a| {
        Ok(Value::Int(to_int64(&a[0]).wrapping_sub(to_int64(&a[1]))))
    });
    r.add("mul", &[Any], Some(Any), |_, a| {
        Ok(Value::Int(
            a[1..]
                .iter()
                .fold(to_int64(&a[0]), |s, v| s.wrapping_mul(to_int64(v))),
        ))
    });
    r.add("div", &[Any, Any], None, |_, a| {
        let d = to_int64(&a[1]);
        if d == 0 {
            return Err(CallError::Msg(
                "runtime error: integer divide by zero".into(),
            ));
        }
        Ok(Value::Int(to_int64(&a[0]).wrapping_div(d)))
    });
    r.add("mod", &[Any, Any], None, |_, a| {
        let d = to_int64(&a[1]);
        if d == 0 {
            return Err(CallError::Msg(
                "runtime error: integer divide by zero".into(),
            ));
        }
        Ok(Value::Int(to_int64(&a[0]).wrapping_rem(d)))
    });
    r.add("max", &[Any], Some(Any), |_, a| {
        Ok(Value::Int(a.iter().map(to_int64).max().unwrap_or(0)))
    });
    r.add("biggest", &[Any], Some(Any), |_, a| {
        Ok(Value::Int(a.iter().map(to_int64).max().unwrap_or(0)))
    });
    r.add("min", &[Any], Some(Any), |_, a| {
        Ok(Value::Int(a.iter().map(to_int64).min().unwrap_or(0)))
    });
    r.add("maxf", &[Any], Some(Any), |_, a| {
        Ok(Value::Float(
            a[1..]
                .iter()
                .fold(to_float64(&a[0]), |m, v| m.max(to_float64(v))),
        ))
    });
    r.add("minf", &[Any], Some(Any), |_, a| {
        Ok(Value::Float(
            a[1..]
                .iter()
                .fold(to_float64(&a[0]), |m, v| m.min(to_float64(v))),
        ))
    });
    r.add("floor", &[Any], None, |_, a| {
        Ok(Value::Float(to_float64(&a[0]).floor()))
    });
    r.add("ceil", &[Any], None, |_, a| {
        Ok(Value::Float(to_float64(&a[0]).ceil()))
    });
    r.add("round", &[Any, Int], Some(Float), |_, a| {
        let round_on = match a.get(2) {
            Some(Value::Float(f)) => *f,
            _ => 0.5,
        };
        let val = to_float64(&a[0]);
        let pow = 10f64.powf(to_float64(&a[1]));
        let digit = pow * val;
        let frac = digit.fract();
        let r = if frac >= round_on {
            digit.ceil()
        } else {
            digit.floor()
        };
        Ok(Value::Float(r / pow))
    });
    r.add("add1f", &[Any], None, |_, a| {
        decimal_op(&a[0], &[Value::Int(1)], Op::Add)
    });
    r.add("addf", &[], Some(Any), |_, a| {
        decimal_op(&Value::Float(0.0), &a, Op::Add)
    });
    r.add("subf", &[Any], Some(Any), |_, a| {
        decimal_op(&a[0], &a[1..], Op::Sub)
    });
    r.add("mulf", &[Any], Some(Any), |_, a| {
        decimal_op(&a[0], &a[1..], Op::Mul)
    });
    r.add("divf", &[Any], Some(Any), |_, a| {
        decimal_op(&a[0], &a[1..], Op::Div)
    });
    r.add("randInt", &[Int, Int], None, |_, a| {
        use rand::Rng;
        let (lo, hi) = (super::int_arg(&a[0]), super::int_arg(&a[1]));
        if hi <= lo {
            return Err(CallError::Msg("invalid argument to Intn".into()));
        }
        Ok(Value::Int(rand::rng().random_range(lo..hi)))
    });
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, then `0x`/`0o`/`0b`/leading-`0` octal prefixes.
fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body.is_empty() {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(h) = lower.strip_prefix("0x") {
        (16, h.replace('_', ""))
    } else if let Some(o) = lower.strip_prefix("0o") {
        (8, o.replace('_', ""))
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b.replace('_', ""))
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].replace('_', ""))
    } else {
        if lower.contains('_') {
            return None;
        }
        (10, lower.clone())
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let v = i128::from_str_radix(&digits, radix).ok()?;
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

/// `cast.ToInt64`: what Sprig's integer functions do with any argument.
pub(crate) fn to_int64(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => {
            if f.is_nan() {
                i64::MIN
            } else {
                *f as i64
            }
        }
        Value::Bool(b) => i64::from(*b),
        Value::String(s) => {
            // cast trims a zero decimal part ("3.00" is 3) before parsing.
            let t = match s.split_once('.') {
                Some((int, frac)) if frac.chars().all(|c| c == '0') => int,
                _ => &**s,
            };
            parse_go_int(t).unwrap_or(0)
        }
        _ => 0,
    }
}

/// `cast.ToFloat64`.
pub(crate) fn to_float64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s
            .parse::<f64>()
            .ok()
            .filter(|_| !s.contains(['_']))
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// A decimal number `mant * 10^exp`, as shopspring/decimal holds it.
#[derive(Clone, Copy)]
struct Dec {
    mant: i128,
    exp: i32,
}

impl Dec {
    /// `decimal.NewFromFloat`: the shortest decimal that round-trips.
    fn from_f64(f: f64) -> Option<Dec> {
        if !f.is_finite() {
            return None;
        }
        let s = format!("{:e}", f);
        let (m, e) = s.split_once('e')?;
        let e: i32 = e.parse().ok()?;
        let (int, frac) = m.split_once('.').unwrap_or((m, ""));
        let mant: i128 = format!("{int}{frac}").parse().ok()?;
        Some(Dec {
            mant,
            exp: e - frac.len() as i32,
        })
    }

    fn to_f64(self) -> f64 {
        format!("{}e{}", self.mant, self.exp).parse().unwrap_or(0.0)
    }

    fn align(a: Dec, b: Dec) -> Option<(i128, i128, i32)> {
        let exp = a.exp.min(b.exp);
        let scale = |d: Dec| -> Option<i128> {
            let shift = u32::try_from(d.exp - exp).ok()?;
            d.mant.checked_mul(10i128.checked_pow(shift)?)
        };
        Some((scale(a)?, scale(b)?, exp))
    }

    fn apply(self, op: Op, o: Dec) -> Option<Dec> {
        match op {
            Op::Add | Op::Sub => {
                let (x, y, exp) = Dec::align(self, o)?;
                let mant = if let Op::Add = op {
                    x.checked_add(y)?
                } else {
                    x.checked_sub(y)?
                };
                Some(Dec { mant, exp })
            }
            Op::Mul => Some(Dec {
                mant: self.mant.checked_mul(o.mant)?,
                exp: self.exp + o.exp,
            }),
            Op::Div => {
                if o.mant == 0 {
                    return None;
                }
                // decimal's DivisionPrecision: 16 digits after the point, rounded half up.
                let (x, y, _) = Dec::align(self, o)?;
                let scaled = x.checked_mul(10i128.pow(17))?;
                let q = scaled / y;
                let rounded = if q % 10 >= 5 {
                    q / 10 + 1
                } else if q % 10 <= -5 {
                    q / 10 - 1
                } else {
                    q / 10
                };
                Some(Dec {
                    mant: rounded,
                    exp: -16,
                })
            }
        }
    }
}

fn decimal_op(first: &Value, rest: &[Value], op: Op) -> FnResult {
    let float = |acc: f64, v: f64| match op {
        Op::Add => acc + v,
        Op::Sub => acc - v,
        Op::Mul => acc * v,
        Op::Div => acc / v,
    };
    let mut acc_f = to_float64(first);
    let mut acc = Dec::from_f64(acc_f);
    for v in rest {
        let x = to_float64(v);
        if let Op::Div = op
            && x == 0.0
        {
            return Err(CallError::Msg("decimal division by 0".into()));
        }
        acc_f = float(acc_f, x);
        acc = match (acc, Dec::from_f64(x)) {
            (Some(a), Some(b)) => a.apply(op, b),
            _ => None,
        };
    }
    Ok(Value::Float(acc.map_or(acc_f, Dec::to_f64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_conversions() {
        assert_eq!(to_int64(&Value::string("0x1f")), 31);
        assert_eq!(to_int64(&Value::string("010")), 8);
        assert_eq!(to_int64(&Value::string("3.00")), 3);
        assert_eq!(to_int64(&Value::string("3.5")), 0);
        assert_eq!(to_int64(&Value::Float(3.9)), 3);
    }

    #[test]
    fn float_math_is_decimal() {
        let r = decimal_op(&Value::Float(0.1), &[Value::Float(0.2)], Op::Add);
        assert!(matches!(r, Ok(Value::Float(f)) if f == 0.3));
        let r = decimal_op(&Value::Float(1.0), &[Value::Float(3.0)], Op::Div);
        assert!(matches!(r, Ok(Value::Float(f)) if f == 0.3333333333333333));
    }
}
