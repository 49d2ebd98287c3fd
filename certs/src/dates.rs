//! UTC calendar formatting of unix seconds, as the certificate claims spell times: dates as
//! `YYYY-MM-DD` and instants as RFC 3339 `YYYY-MM-DDThh:mm:ssZ`. Only years 0000–9999 are
//! accepted, so every output has exactly the four-digit year both formats require.

use time::OffsetDateTime;

/// A unix time outside the years 0000–9999, which neither format can spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unix time {0} is outside the years 0000-9999")]
pub struct DateOutOfRange(pub i64);

fn civil(unix: i64) -> Result<OffsetDateTime, DateOutOfRange> {
    let at = OffsetDateTime::from_unix_timestamp(unix).map_err(|_| DateOutOfRange(unix))?;
    if (0..=9999).contains(&at.year()) {
        Ok(at)
    } else {
        Err(DateOutOfRange(unix))
    }
}

/// The UTC calendar date of `unix` seconds, `YYYY-MM-DD`.
pub fn utc_date(unix: i64) -> Result<String, DateOutOfRange> {
    let at = civil(unix)?;
    Ok(format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    ))
}

/// `unix` seconds as an RFC 3339 UTC instant with whole seconds, `YYYY-MM-DDThh:mm:ssZ`.
pub fn utc_rfc3339(unix: i64) -> Result<String, DateOutOfRange> {
    let at = civil(unix)?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(utc_date(0).unwrap(), "1970-01-01");
        assert_eq!(utc_rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(-1).unwrap(), "1969-12-31");
        assert_eq!(utc_rfc3339(-1).unwrap(), "1969-12-31T23:59:59Z");
        // 2021-06-01T08:30:15Z
        assert_eq!(utc_rfc3339(1_622_536_215).unwrap(), "2021-06-01T08:30:15Z");
        // leap day, and the day after
        assert_eq!(utc_date(951_782_400).unwrap(), "2000-02-29");
        assert_eq!(utc_date(951_868_800).unwrap(), "2000-03-01");
        assert_eq!(utc_date(1_709_164_800).unwrap(), "2024-02-29");
        assert_eq!(utc_rfc3339(1_735_689_599).unwrap(), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn range_edges() {
        assert_eq!(utc_date(-62_167_219_200).unwrap(), "0000-01-01");
        assert_eq!(
            utc_rfc3339(253_402_300_799).unwrap(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            utc_date(-62_167_219_201),
            Err(DateOutOfRange(-62_167_219_201))
        );
        assert_eq!(
            utc_date(253_402_300_800),
            Err(DateOutOfRange(253_402_300_800))
        );
        assert!(utc_date(i64::MAX).is_err());
        assert!(utc_rfc3339(i64::MIN).is_err());
    }
}
