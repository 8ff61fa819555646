//! RFC 3339 timestamps (`2026-12-14T18:00:00Z`, `...+01:00`) to and from unix milliseconds: the API's times, without a date crate for two functions.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 date-time (years 1970-9999) to unix milliseconds.
pub fn parse(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not an RFC 3339 time such as 2026-12-14T18:00:00Z");
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > 40 || !text.is_ascii() {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Result<i64, String> {
        let part = &text[from..to];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, s) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d < 1
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || s > 60
    {
        return Err(bad());
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let digits = &text[start..i.min(start + 3)];
        ms = format!("{digits:0<3}").parse::<i64>().map_err(|_| bad())?;
    }
    let offset_min = match &text[i..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && matches!(zone.as_bytes()[0], b'+' | b'-') => {
            if zone.as_bytes()[3] != b':' {
                return Err(bad());
            }
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return Err(bad()),
    };
    let seconds =
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset_min * 60;
    if seconds < 0 {
        return Err(bad());
    }
    Ok((seconds * 1000 + ms) as u64)
}

/// Formats unix milliseconds as RFC 3339 in UTC, to the second (`2026-12-14T18:00:00Z`).
pub fn format(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_rfc3339() {
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse("2026-12-14T18:00:00Z"), Ok(1_797_271_200_000));
        assert_eq!(
            parse("2026-12-14T19:00:00.250+01:00"),
            Ok(1_797_271_200_250)
        );
        assert_eq!(parse("2024-02-29T00:00:00-00:30"), Ok(1_709_166_600_000));
        assert_eq!(format(1_797_271_200_999), "2026-12-14T18:00:00Z");
        assert_eq!(format(1_709_166_600_000), "2024-02-29T00:30:00Z");
        for bad in [
            "",
            "2026-12-14",
            "2026-12-14T18:00:00",
            "2026-02-30T18:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-14T24:00:00Z",
            "2026-12-14T18:00:00+0100",
            "2026-12-14T18:00:00.Z",
            "1969-12-31T23:59:59Z",
            "２026-12-14T18:00:00Z",
            "+026-12-14T18:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for ms in [0u64, 951_782_400_000, 1_797_271_200_000, 4_102_444_800_000] {
            assert_eq!(parse(&format(ms)), Ok(ms / 1000 * 1000));
        }
    }
}
