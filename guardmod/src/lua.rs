//! Numbers as Redis' Lua 5.1 prints them (`tostring`, C's `"%.14g"`), so
//! that the module's refusals read exactly as `guard_v3.lua`'s.

/// `x` as `printf("%.14g", x)` prints it with glibc.
pub fn number(x: f64) -> String {
    const PRECISION: i32 = 14;
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // The exponent %e would print, after rounding to 14 significant digits,
    // picks the style (C11 7.21.6.1, "g").
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, x);
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..PRECISION).contains(&exp) {
        let fixed = format!("{:.*}", (PRECISION - 1 - exp) as usize, x);
        trim_zeros(&fixed).to_owned()
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim_zeros(mantissa), exp.abs())
    }
}

/// Without trailing zeros after the decimal point, nor a bare point.
fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn prints_as_percent_14g() {
        let cases: [(f64, &str); 14] = [
            (1.5, "1.5"),
            (f64::from(0.6_f32), "0.60000002384186"),
            (-2.0, "-2"),
            (100_000_000_000_000.0, "1e+14"),
            (12_345_678_901_234.0, "12345678901234"),
            (0.0001, "0.0001"),
            (0.000_012_5, "1.25e-05"),
            (1e300, "1e+300"),
            (f64::from(f32::MAX), "3.4028234663853e+38"),
            (-0.0, "-0"),
            (f64::NAN, "nan"),
            (-f64::NAN, "-nan"),
            (f64::NEG_INFINITY, "-inf"),
            (99_999_999_999_999.9, "1e+14"),
        ];
        for (x, want) in cases {
            assert_eq!(number(x), want, "{x:e}");
        }
    }
}
