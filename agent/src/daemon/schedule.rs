//! When a volume's scheduled backup is due. A schedule is a 5-field cron expression (minute,
//! hour, day of month, month, day of week), a nickname (`@hourly`, `@daily`, `@weekly`,
//! `@monthly`, `@yearly`), or `@every DURATION` (`@every 30s`, `@every 6h`, `@every 1h30m`).
//! Cron times are in the agent's time zone.
//!
//! A backup is due when the first scheduled time after the volume's last snapshot has come:
//! so a time missed while the agent was down runs once when it starts, and never twice.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A cron expression or nickname.
    Cron(Box<Cron>, String),
    /// A fixed interval.
    Every(Duration),
}

/// Why a schedule does not parse.
#[derive(Debug, thiserror::Error)]
#[error("schedule {text:?} does not parse: {reason}")]
pub struct ScheduleError {
    text: String,
    reason: String,
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let err = |reason: String| ScheduleError {
            text: text.to_string(),
            reason,
        };
        if let Some(rest) = text.strip_prefix("@every") {
            let d = parse_duration(rest.trim()).map_err(err)?;
            if d < Duration::from_secs(1) {
                return Err(err("the interval must be at least 1s".into()));
            }
            return Ok(Schedule::Every(d));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| {
                err(format!(
                    "{e} (use 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily, @every 6h)"
                ))
            })?;
        Ok(Schedule::Cron(Box::new(cron), text.to_string()))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron(_, text) => f.write_str(text),
            Schedule::Every(d) => write!(f, "@every {}s", d.as_secs()),
        }
    }
}

impl Schedule {
    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => chrono::Duration::from_std(*d).ok().map(|d| t + d),
            Schedule::Cron(cron, _) => cron
                .find_next_occurrence(&t.with_timezone(&Local), false)
                .ok()
                .map(|n| n.with_timezone(&Utc)),
        }
    }
}

/// Parses `90s`, `30m`, `6h`, `1h30m`, `2d`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 5m, 6h or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_spelling_the_issue_names_parses() {
        for s in [
            "0 2 * * *",
            "*/15 * * * 1-5",
            "@hourly",
            "@daily",
            "@every 30s",
            "@every 6h",
            "@every 1h30m",
        ] {
            assert!(s.parse::<Schedule>().is_ok(), "{s}");
        }
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for s in [
            "",
            "0 2 * *",
            "0 0 2 * * *",
            "61 * * * *",
            "@every",
            "@every 5x",
            "@every 0s",
            "daily",
        ] {
            let e = s.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains(&format!("{:?}", s.trim())), "{e}");
        }
    }

    #[test]
    fn a_missed_time_is_due_once_and_the_next_is_in_the_future() {
        let every = "@every 6h".parse::<Schedule>().unwrap();
        let last = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        // Down for a day: the backup is due (the first missed time), once.
        let due = every.next_after(last).unwrap();
        assert!(due <= now);
        // After that backup ran at `now`, the next one is 6 h later.
        assert_eq!(
            every.next_after(now).unwrap(),
            now + chrono::Duration::hours(6)
        );
    }

    #[test]
    fn cron_times_follow_the_expression() {
        let hourly = "@hourly".parse::<Schedule>().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 3, 4, 10, 20, 0).unwrap();
        let next = hourly.next_after(t).unwrap();
        assert_eq!(next - t, chrono::Duration::minutes(40));
        let five = "*/5 * * * *".parse::<Schedule>().unwrap();
        let next = five.next_after(t).unwrap();
        assert_eq!(next - t, chrono::Duration::minutes(5));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "h", "1.5h", "5 m", "-3s", "3s5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
