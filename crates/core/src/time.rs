//! UTC dates in the formats Lambda uses, without a time-zone database.

use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month, day, seconds into the day, milliseconds) of a moment, in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    // Days to civil date (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
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
    }
}
