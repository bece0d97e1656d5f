//! UTC dates in the formats Lambda uses, without a time-zone database.

use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month 1–12, day 1–31) of a day counted from 1970-01-01 (Howard Hinnant's
/// algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day counted from 1970-01-01 of a civil date; the inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day, seconds into the day, milliseconds) of a moment, in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    (year, month, day, secs % 86_400, d.subsec_millis())
}

/// `2019-08-14T22:26:11.234+0000`, as in `LastModified`.
pub fn lambda_timestamp(t: SystemTime) -> String {
    let (y, mo, d, s, ms) = civil(t);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}+0000",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `2019/08/14`, as in log stream names.
pub fn log_stream_date(t: SystemTime) -> String {
    let (y, mo, d, _, _) = civil(t);
    format!("{y:04}/{mo:02}/{d:02}")
}

/// `2019-08-14`: the UTC day usage is aggregated by.
pub fn utc_day(t: SystemTime) -> String {
    let (y, mo, d, _, _) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_a_known_moment() {
        let t = UNIX_EPOCH + Duration::from_millis(1_565_821_571_234);
        assert_eq!(lambda_timestamp(t), "2019-08-14T22:26:11.234+0000");
        assert_eq!(log_stream_date(t), "2019/08/14");
        assert_eq!(utc_day(t), "2019-08-14");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(log_stream_date(leap), "2000/02/29");
        for days in [-1_000_000, -1, 0, 1, 11_016, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
