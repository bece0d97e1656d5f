//! Schedule expressions, as EventBridge writes them, and when they next fire: pure
//! functions of the expression and a time (UTC, epoch milliseconds).
//!
//! - `rate(VALUE UNIT)`: every VALUE minutes, hours or days (`minute` when VALUE is 1),
//!   counted from an anchor (the rule's creation). Ember also takes `seconds` (EventBridge
//!   does not), for schedules finer than a minute.
//! - `cron(MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR)`: each field `*`, a value, a
//!   range `a-b`, a list `a,b`, or a step `*/n`, `a/n`, `a-b/n`; months may be `JAN`–`DEC`,
//!   days of the week `1`–`7` (Sunday first) or `SUN`–`SAT`; one of day-of-month and
//!   day-of-week must be `?`. `L`, `W` and `#` are not supported.

use std::fmt;

use ember_core::time::{civil_from_days, days_from_civil};

const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: i64 = 1440;
/// How far ahead a cron expression is searched for its next time.
const HORIZON_DAYS: i64 = 366 * 30;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Rate { every_ms: i64 },
    Cron(Cron),
}

/// The allowed values of each cron field, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    /// `None` for `?`.
    days_of_month: Option<u64>,
    months: u64,
    /// Sunday is bit 1; `None` for `?`.
    days_of_week: Option<u64>,
    /// Years from 1970 as a set over 1970–2199.
    years: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; a schedule is rate(5 minutes) or cron(0 12 * * ? *) (minutes hours day-of-month month day-of-week year)",
            self.0
        )
    }
}

impl std::error::Error for ScheduleError {}

fn err(text: impl Into<String>) -> ScheduleError {
    ScheduleError(text.into())
}

impl Schedule {
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        let expression = expression.trim();
        if let Some(inner) = expression
            .strip_prefix("rate(")
            .and_then(|e| e.strip_suffix(')'))
        {
            return parse_rate(inner);
        }
        if let Some(inner) = expression
            .strip_prefix("cron(")
            .and_then(|e| e.strip_suffix(')'))
        {
            return parse_cron(inner).map(Schedule::Cron);
        }
        Err(err(format!("{expression:?} is not a schedule expression")))
    }

    /// The first time strictly after `after_ms` that the schedule fires; a rate counts
    /// from `anchor_ms`. `None` if a cron expression never fires again.
    pub fn next_after(&self, anchor_ms: i64, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Rate { every_ms } => {
                if after_ms < anchor_ms {
                    return Some(anchor_ms + every_ms);
                }
                let periods = (after_ms - anchor_ms) / every_ms + 1;
                Some(anchor_ms + periods * every_ms)
            }
            Schedule::Cron(cron) => cron.next_after(after_ms),
        }
    }
}

fn parse_rate(inner: &str) -> Result<Schedule, ScheduleError> {
    let mut parts = inner.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err(format!("rate({inner}) must be rate(VALUE UNIT)")));
    };
    let value: i64 = value.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
        err(format!(
            "the rate's value must be a positive whole number (got {value:?})"
        ))
    })?;
    let unit_ms = match (unit, value) {
        ("second", 1) | ("seconds", 2..) => 1000,
        ("minute", 1) | ("minutes", 2..) => MINUTE_MS,
        ("hour", 1) | ("hours", 2..) => 60 * MINUTE_MS,
        ("day", 1) | ("days", 2..) => DAY_MINUTES * MINUTE_MS,
        _ => {
            return Err(err(format!(
                "the rate's unit must be minute/hour/day for 1 and minutes/hours/days otherwise (got {value} {unit})"
            )));
        }
    };
    Ok(Schedule::Rate {
        every_ms: value * unit_ms,
    })
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parses one field into a set of values in `min..=max`.
fn field(
    text: &str,
    name: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<Vec<u32>, ScheduleError> {
    if text.contains(['L', 'W', '#']) && names.iter().all(|n| !text.contains(n)) {
        return Err(err(format!(
            "the {name} field {text:?} uses L, W or #, which Ember does not support"
        )));
    }
    let value = |v: &str| -> Result<u32, ScheduleError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(min + i as u32);
        }
        v.parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                err(format!(
                    "the {name} field's {v:?} is not a value from {min} to {max}"
                ))
            })
    };
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    err(format!(
                        "the {name} field's step {s:?} is not a positive number"
                    ))
                })?;
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, max),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if from > to {
            return Err(err(format!(
                "the {name} field's range {range:?} runs backwards"
            )));
        }
        out.extend((from..=to).step_by(step as usize));
    }
    Ok(out)
}

fn bits(values: &[u32]) -> u64 {
    values.iter().fold(0, |b, v| b | 1 << v)
}

fn parse_cron(inner: &str) -> Result<Cron, ScheduleError> {
    let fields: Vec<&str> = inner.split_whitespace().collect();
    let [minutes, hours, dom, month, dow, year] = fields.as_slice() else {
        return Err(err(format!(
            "cron({inner}) must have six fields (got {})",
            fields.len()
        )));
    };
    let optional =
        |text: &str, name, min, max, names: &[&str]| -> Result<Option<u64>, ScheduleError> {
            if text == "?" {
                return Ok(None);
            }
            Ok(Some(bits(&field(text, name, min, max, names)?)))
        };
    let days_of_month = optional(dom, "day-of-month", 1, 31, &[])?;
    let days_of_week = optional(dow, "day-of-week", 1, 7, &WEEKDAYS)?;
    if days_of_month.is_some() == days_of_week.is_some() {
        return Err(err(
            "exactly one of day-of-month and day-of-week must be ? (the other says which days)",
        ));
    }
    let year_values = field(year, "year", 1970, 2199, &[])?;
    let mut years = vec![false; 230];
    for y in year_values {
        years[(y - 1970) as usize] = true;
    }
    Ok(Cron {
        minutes: bits(&field(minutes, "minutes", 0, 59, &[])?),
        hours: bits(&field(hours, "hours", 0, 23, &[])?),
        days_of_month,
        months: bits(&field(month, "month", 1, 12, &MONTHS)?),
        days_of_week,
        years,
    })
}

impl Cron {
    fn day_matches(&self, days: i64) -> bool {
        let (year, month, day) = civil_from_days(days);
        let in_years = (1970..2200).contains(&year) && self.years[(year - 1970) as usize];
        // 1970-01-01 was a Thursday (weekday 5 with Sunday = 1).
        let weekday = ((days + 4).rem_euclid(7) + 1) as u32;
        in_years
            && self.months & (1 << month) != 0
            && self.days_of_month.is_none_or(|d| d & (1 << day) != 0)
            && self.days_of_week.is_none_or(|d| d & (1 << weekday) != 0)
    }

    fn next_after(&self, after_ms: i64) -> Option<i64> {
        // The first whole minute after `after_ms`.
        let start = after_ms.div_euclid(MINUTE_MS) + 1;
        let first_day = start.div_euclid(DAY_MINUTES);
        for day in first_day..first_day + HORIZON_DAYS {
            if !self.day_matches(day) {
                continue;
            }
            let from = if day == first_day {
                start.rem_euclid(DAY_MINUTES)
            } else {
                0
            };
            for minute_of_day in from..DAY_MINUTES {
                let (hour, minute) = (minute_of_day / 60, minute_of_day % 60);
                if self.hours & (1 << hour) != 0 && self.minutes & (1 << minute) != 0 {
                    return Some((day * DAY_MINUTES + minute_of_day) * MINUTE_MS);
                }
            }
        }
        None
    }
}

/// The time a schedule should fire for at `now_ms`, if it is due: the latest scheduled
/// time not after `now_ms` and after the one it last fired for (`last_ms`, or the anchor
/// when it never fired). Times missed while the server was down collapse into this one.
pub fn due(schedule: &Schedule, anchor_ms: i64, last_ms: Option<i64>, now_ms: i64) -> Option<i64> {
    let mut next = schedule.next_after(anchor_ms, last_ms.unwrap_or(anchor_ms))?;
    if next > now_ms {
        return None;
    }
    if let Schedule::Rate { every_ms } = schedule {
        return Some(next + (now_ms - next) / every_ms * every_ms);
    }
    // A cron expression: step to the last time not after now (bounded: at most a day of
    // minutes per step, and a long outage is one firing anyway).
    for _ in 0..100_000 {
        match schedule.next_after(anchor_ms, next) {
            Some(t) if t <= now_ms => next = t,
            _ => break,
        }
    }
    Some(next)
}

/// Epoch milliseconds of a UTC date and time, for tests and callers that think in dates.
pub fn utc_ms(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
    (days_from_civil(year, month, day) * DAY_MINUTES + hour * 60 + minute) * MINUTE_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(expr: &str, after: i64) -> i64 {
        Schedule::parse(expr).unwrap().next_after(0, after).unwrap()
    }

    #[test]
    fn rates_count_from_their_anchor() {
        let five = Schedule::parse("rate(5 minutes)").unwrap();
        assert_eq!(five.next_after(1_000, 1_000), Some(1_000 + 5 * MINUTE_MS));
        assert_eq!(
            five.next_after(1_000, 1_000 + 5 * MINUTE_MS),
            Some(1_000 + 10 * MINUTE_MS)
        );
        assert_eq!(
            Schedule::parse("rate(1 day)").unwrap(),
            Schedule::Rate {
                every_ms: 86_400_000
            }
        );
        for bad in [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(0 hours)",
            "rate(5 weeks)",
            "rate(x hours)",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_expressions_fire_at_their_next_matching_minute() {
        let t = utc_ms(2026, 11, 22, 16, 59); // a Sunday
        assert_eq!(next("cron(0 12 * * ? *)", t), utc_ms(2026, 11, 23, 12, 0));
        assert_eq!(next("cron(*/15 * * * ? *)", t), utc_ms(2026, 11, 22, 17, 0));
        assert_eq!(
            next("cron(0/15 * * * ? *)", utc_ms(2026, 11, 22, 17, 0)),
            utc_ms(2026, 11, 22, 17, 15)
        );
        // Weekdays at 08:30: Sunday evening → Monday.
        assert_eq!(
            next("cron(30 8 ? * MON-FRI *)", t),
            utc_ms(2026, 11, 23, 8, 30)
        );
        assert_eq!(next("cron(30 8 ? * 2-6 *)", t), utc_ms(2026, 11, 23, 8, 30));
        // The first of a month; the 29th of February (a leap year).
        assert_eq!(next("cron(0 0 1 * ? *)", t), utc_ms(2026, 12, 1, 0, 0));
        assert_eq!(next("cron(0 0 29 FEB ? *)", t), utc_ms(2028, 2, 29, 0, 0));
        // A year that has passed never fires again.
        assert_eq!(
            Schedule::parse("cron(0 0 1 1 ? 2020)")
                .unwrap()
                .next_after(0, t),
            None
        );
        // Strictly after: at 12:00 the next noon is tomorrow's.
        let noon = utc_ms(2026, 11, 23, 12, 0);
        assert_eq!(
            next("cron(0 12 * * ? *)", noon),
            utc_ms(2026, 11, 24, 12, 0)
        );
    }

    #[test]
    fn a_due_schedule_fires_once_for_the_latest_time_missed() {
        let every = Schedule::parse("rate(5 minutes)").unwrap();
        let anchor = 0;
        assert_eq!(due(&every, anchor, None, 4 * MINUTE_MS), None);
        assert_eq!(
            due(&every, anchor, None, 5 * MINUTE_MS),
            Some(5 * MINUTE_MS)
        );
        assert_eq!(
            due(&every, anchor, Some(5 * MINUTE_MS), 9 * MINUTE_MS),
            None
        );
        // Down from minute 6 to minute 27: one firing, for minute 25.
        assert_eq!(
            due(&every, anchor, Some(5 * MINUTE_MS), 27 * MINUTE_MS),
            Some(25 * MINUTE_MS)
        );
        let noon = Schedule::parse("cron(0 12 * * ? *)").unwrap();
        let last = utc_ms(2026, 11, 20, 12, 0);
        let now = utc_ms(2026, 11, 22, 16, 59);
        assert_eq!(
            due(&noon, 0, Some(last), now),
            Some(utc_ms(2026, 11, 22, 12, 0))
        );
        assert_eq!(due(&noon, 0, Some(utc_ms(2026, 11, 22, 12, 0)), now), None);
        let seconds = Schedule::parse("rate(2 seconds)").unwrap();
        assert_eq!(due(&seconds, 1_000, None, 4_500), Some(3_000));
    }

    #[test]
    fn bad_cron_expressions_say_what_is_wrong() {
        for (bad, says) in [
            ("cron(0 12 * * *)", "six fields"),
            ("cron(0 12 * * * *)", "exactly one"),
            ("cron(0 12 ? * ? *)", "exactly one"),
            ("cron(61 12 * * ? *)", "from 0 to 59"),
            ("cron(0 12 L * ? *)", "not support"),
            ("cron(0 12 ? * 6#3 *)", "not support"),
            ("cron(0 20-10 * * ? *)", "backwards"),
            ("every day", "not a schedule"),
        ] {
            let e = Schedule::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
