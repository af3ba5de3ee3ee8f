//! Sprig's date functions over a `time.Time`-like object. `now` reads only
//! [`crate::Clock`], so renders can be made deterministic. Go layouts (`2006-01-02T15:04:05Z07:00`)
//! are interpreted here; the "Local" zone is UTC (the hub renders the same everywhere), and
//! named zones other than UTC are not available (Go falls back to UTC as well when a zone
//! cannot be loaded).

use time::{Duration, OffsetDateTime, UtcOffset};

use super::{CallError, Ctx, FnResult, Registry, Ty, str_arg};
use crate::{Clock, Object, Value};

pub(super) fn register(r: &mut Registry) {
    use Ty::*;
    r.add("now", &[], None, |c, _| Ok(time_value(now(c))));
    r.add("date", &[Str, Any], None, |c, a| {
        fmt(c, str_arg(&a[0]), &a[1])
    });
    r.add("dateInZone", &[Str, Any, Str], None, |c, a| {
        fmt(c, str_arg(&a[0]), &a[1])
    });
    r.add("date_in_zone", &[Str, Any, Str], None, |c, a| {
        fmt(c, str_arg(&a[0]), &a[1])
    });
    r.add("htmlDate", &[Any], None, |c, a| fmt(c, "2006-01-02", &a[0]));
    r.add("htmlDateInZone", &[Any, Str], None, |c, a| {
        fmt(c, "2006-01-02", &a[0])
    });
    r.add("dateModify", &[Str, Any], None, |_, a| {
        let t = time_arg(&a[1])?;
        Ok(time_value(match parse_duration(str_arg(&a[0])) {
            Some(d) => t.checked_add(d).unwrap_or(t),
            None => t,
        }))
    });
    r.add("date_modify", &[Str, Any], None, |_, a| {
        let t = time_arg(&a[1])?;
        Ok(time_value(
            parse_duration(str_arg(&a[0]))
                .and_then(|d| t.checked_add(d))
                .unwrap_or(t),
        ))
    });
    r.add("mustDateModify", &[Str, Any], None, must_modify);
    r.add("must_date_modify", &[Str, Any], None, must_modify);
    r.add("ago", &[Any], None, |c, a| {
        let t = any_time(c, &a[0]);
        let d = now(c) - t;
        Ok(Value::string(format_duration(round_seconds(d))))
    });
    r.add("duration", &[Any], None, |_, a| {
        let n = match &a[0] {
            Value::String(s) => s.parse::<i64>().unwrap_or(0),
            Value::Int(i) => *i,
            _ => 0,
        };
        Ok(Value::string(format_duration(Duration::seconds(n))))
    });
    r.add("durationRound", &[Any], None, |c, a| {
        let d = match &a[0] {
            Value::String(s) => parse_duration(s).unwrap_or(Duration::ZERO),
            Value::Int(i) => Duration::nanoseconds(*i),
            Value::Object(_) => match time_arg(&a[0]) {
                Ok(t) => now(c) - t,
                Err(_) => Duration::ZERO,
            },
            _ => Duration::ZERO,
        };
        let u = d.whole_nanoseconds().unsigned_abs();
        let second = 1_000_000_000u128;
        let (minute, hour) = (60 * second, 3600 * second);
        let (day, month, year) = (24 * hour, 30 * 24 * hour, 365 * 24 * hour);
        let s = if u > year {
            format!("{}y", u / year)
        } else if u > month {
            format!("{}mo", u / month)
        } else if u > day {
            format!("{}d", u / day)
        } else if u > hour {
            format!("{}h", u / hour)
        } else if u > minute {
            format!("{}m", u / minute)
        } else if u > second {
            format!("{}s", u / second)
        } else {
            "0s".to_string()
        };
        Ok(Value::string(s))
    });
    r.add("toDate", &[Str, Str], None, |_, a| {
        Ok(time_value(
            parse_layout(str_arg(&a[0]), str_arg(&a[1])).unwrap_or(zero_time()),
        ))
    });
    r.add("mustToDate", &[Str, Str], None, |_, a| {
        parse_layout(str_arg(&a[0]), str_arg(&a[1]))
            .map(time_value)
            .ok_or_else(|| {
                CallError::Msg(format!(
                    "parsing time {:?} as {:?}: cannot parse",
                    str_arg(&a[1]),
                    str_arg(&a[0])
                ))
            })
    });
    r.add("unixEpoch", &[Any], None, |_, a| {
        Ok(Value::string(time_arg(&a[0])?.unix_timestamp().to_string()))
    });
}

/// A Go `time.Time`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Time(pub OffsetDateTime);

impl Object for Time {
    fn type_name(&self) -> &str {
        "time.Time"
    }

    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let t = self.0;
        let v = match name {
            "Year" => Value::Int(i64::from(t.year())),
            "Month" => Value::Int(i64::from(u8::from(t.month()))),
            "Day" => Value::Int(i64::from(t.day())),
            "Hour" => Value::Int(i64::from(t.hour())),
            "Minute" => Value::Int(i64::from(t.minute())),
            "Second" => Value::Int(i64::from(t.second())),
            "Unix" => Value::Int(t.unix_timestamp()),
            "UTC" => time_value(t.to_offset(UtcOffset::UTC)),
            "Format" => {
                let Some(Value::String(layout)) = args.first() else {
                    return Some(Err(format!(
                        "wrong number of args for Format: want 1 got {}",
                        args.len()
                    )));
                };
                return Some(Ok(Value::string(format_layout(t, layout))));
            }
            _ => return None,
        };
        Some(Ok(v))
    }

    fn display(&self) -> String {
        format_layout(self.0, "2006-01-02 15:04:05.999999999 -0700 MST")
    }

    fn to_data(&self) -> Value {
        Value::string(format_layout(self.0, "2006-01-02T15:04:05.999999999Z07:00"))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn time_value(t: OffsetDateTime) -> Value {
    Value::object(Time(t))
}

fn zero_time() -> OffsetDateTime {
    time::Date::from_calendar_date(1, time::Month::January, 1)
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn now(c: &Ctx<'_>) -> OffsetDateTime {
    match c.options.helm.clock {
        Clock::System => OffsetDateTime::now_utc(),
        Clock::Fixed(t) => t,
    }
}

fn time_arg(v: &Value) -> Result<OffsetDateTime, CallError> {
    if let Value::Object(o) = v
        && let Some(t) = o.as_any().downcast_ref::<Time>()
    {
        return Ok(t.0);
    }
    Err(CallError::Msg(format!(
        "wrong type for value; expected time.Time; got {}",
        v.type_name()
    )))
}

/// Sprig's date arguments: a time, or unix seconds; anything else means now.
fn any_time(c: &Ctx<'_>, v: &Value) -> OffsetDateTime {
    match v {
        Value::Int(i) => OffsetDateTime::from_unix_timestamp(*i).unwrap_or_else(|_| now(c)),
        other => time_arg(other).unwrap_or_else(|_| now(c)),
    }
}

fn fmt(c: &Ctx<'_>, layout: &str, v: &Value) -> FnResult {
    let t = any_time(c, v).to_offset(UtcOffset::UTC);
    let s = format_layout(t, layout);
    c.alloc(s.len())?;
    Ok(Value::string(s))
}

fn must_modify(_: &Ctx<'_>, a: Vec<Value>) -> FnResult {
    let t = time_arg(&a[1])?;
    let d = parse_duration(str_arg(&a[0]))
        .ok_or_else(|| CallError::Msg(format!("time: invalid duration {:?}", str_arg(&a[0]))))?;
    Ok(time_value(t.checked_add(d).unwrap_or(t)))
}

fn round_seconds(d: Duration) -> Duration {
    let ns = d.whole_nanoseconds();
    let s = 1_000_000_000i128;
    let r = ns.rem_euclid(s);
    let base = ns - r;
    let rounded = if r * 2 >= s { base + s } else { base };
    Duration::nanoseconds(i64::try_from(rounded).unwrap_or(i64::MAX))
}

/// Go's `time.Duration.String()`.
pub(crate) fn format_duration(d: Duration) -> String {
    let ns = d.whole_nanoseconds();
    if ns == 0 {
        return "0s".to_string();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&frac(u, div));
        out.push_str(unit);
    } else {
        let secs_ns = u % 60_000_000_000;
        let mins = u / 60_000_000_000;
        let (h, m) = (mins / 60, mins % 60);
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&frac(secs_ns, 1_000_000_000));
        out.push('s');
    }
    if neg { format!("-{out}") } else { out }
}

fn frac(v: u128, div: u128) -> String {
    let whole = v / div;
    let rest = v % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Go's `time.ParseDuration`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    if total > 9.2e18 {
        return None;
    }
    let d = Duration::nanoseconds(total as i64);
    Some(if neg { -d } else { d })
}

/// One element of a Go layout.
enum Chunk<'a> {
    Lit(&'a str),
    Std(&'static str),
}

const STD: [&str; 33] = [
    "January",
    "Jan",
    "Monday",
    "Mon",
    "MST",
    "2006",
    "-07:00:00",
    "-0700",
    "-07:00",
    "-07",
    "Z07:00:00",
    "Z0700",
    "Z07:00",
    "Z07",
    "002",
    "01",
    "02",
    "03",
    "04",
    "05",
    "06",
    "_2",
    "15",
    "1",
    "2",
    "3",
    "4",
    "5",
    "PM",
    "pm",
    ".000",
    ".999",
    ",000",
];

/// Splits a Go layout into literal text and the standard elements Go recognises.
fn chunks(layout: &str) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    let mut lit_start = 0;
    let mut i = 0;
    let b = layout.as_bytes();
    while i < b.len() {
        let rest = &layout[i..];
        let mut found: Option<&'static str> = None;
        for s in STD {
            if let Some(after) = rest.strip_prefix(s) {
                // `Jan`/`Mon` only when not followed by a lower-case letter (`January` aside).
                if (s == "Jan" || s == "Mon") && after.starts_with(|c: char| c.is_ascii_lowercase())
                {
                    continue;
                }
                if s == ".000" || s == ".999" || s == ",000" {
                    // Fractional seconds: any run of 0s or 9s after the separator.
                    let digit = rest.as_bytes()[1];
                    let n = rest[1..].bytes().take_while(|c| *c == digit).count();
                    if rest[1 + n..].starts_with(|c: char| c.is_ascii_digit()) {
                        continue;
                    }
                    if i > lit_start {
                        out.push(Chunk::Lit(&layout[lit_start..i]));
                    }
                    out.push(Chunk::Lit(&layout[i..i + 1 + n]));
                    // Marked by the separator and digits; handled in format by re-checking.
                    i += 1 + n;
                    lit_start = i;
                    found = Some("");
                    break;
                }
                found = Some(s);
                break;
            }
        }
        match found {
            Some("") => {}
            Some(s) => {
                if i > lit_start {
                    out.push(Chunk::Lit(&layout[lit_start..i]));
                }
                out.push(Chunk::Std(s));
                i += s.len();
                lit_start = i;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    if lit_start < b.len() {
        out.push(Chunk::Lit(&layout[lit_start..]));
    }
    out
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Go's `Time.Format(layout)`.
pub(crate) fn format_layout(t: OffsetDateTime, layout: &str) -> String {
    let mut out = String::new();
    let month = u8::from(t.month()) as usize;
    let off = t.offset();
    let off_secs = off.whole_seconds();
    for c in chunks(layout) {
        match c {
            Chunk::Lit(l) => {
                let mut lc = l.chars();
                let first = lc.next();
                let rest: &str = lc.as_str();
                if matches!(first, Some('.' | ','))
                    && !rest.is_empty()
                    && rest.bytes().all(|d| d == b'0' || d == b'9')
                {
                    let n = rest.len().min(9);
                    let digits = format!("{:09}", t.nanosecond());
                    let mut d = digits[..n].to_string();
                    if rest.starts_with('9') {
                        d = d.trim_end_matches('0').to_string();
                        if !d.is_empty() {
                            out.push(first.unwrap_or('.'));
                            out.push_str(&d);
                        }
                    } else {
                        out.push(first.unwrap_or('.'));
                        out.push_str(&d);
                    }
                } else {
                    out.push_str(l);
                }
            }
            Chunk::Std(s) => {
                let zone = |colon: bool, secs: bool, z: bool, short: bool| -> String {
                    if z && off_secs == 0 {
                        return "Z".into();
                    }
                    let sign = if off_secs < 0 { '-' } else { '+' };
                    let a = off_secs.unsigned_abs();
                    let (h, m, s) = (a / 3600, (a / 60) % 60, a % 60);
                    let mut r = format!("{sign}{h:02}");
                    if !short {
                        if colon {
                            r.push(':');
                        }
                        r.push_str(&format!("{m:02}"));
                    }
                    if secs {
                        if colon {
                            r.push(':');
                        }
                        r.push_str(&format!("{s:02}"));
                    }
                    r
                };
                let piece = match s {
                    "January" => MONTHS[month - 1].to_string(),
                    "Jan" => MONTHS[month - 1][..3].to_string(),
                    "Monday" => DAYS[t.weekday().number_days_from_monday() as usize].to_string(),
                    "Mon" => DAYS[t.weekday().number_days_from_monday() as usize][..3].to_string(),
                    "MST" => {
                        if off_secs == 0 {
                            "UTC".into()
                        } else {
                            zone(false, false, false, false)
                        }
                    }
                    "2006" => format!("{:04}", t.year()),
                    "06" => format!("{:02}", t.year().rem_euclid(100)),
                    "01" => format!("{month:02}"),
                    "1" => month.to_string(),
                    "02" => format!("{:02}", t.day()),
                    "_2" => format!("{:>2}", t.day()),
                    "2" => t.day().to_string(),
                    "002" => format!("{:03}", t.ordinal()),
                    "15" => format!("{:02}", t.hour()),
                    "03" => format!("{:02}", hour12(t.hour())),
                    "3" => hour12(t.hour()).to_string(),
                    "04" => format!("{:02}", t.minute()),
                    "4" => t.minute().to_string(),
                    "05" => format!("{:02}", t.second()),
                    "5" => t.second().to_string(),
                    "PM" => if t.hour() >= 12 { "PM" } else { "AM" }.to_string(),
                    "pm" => if t.hour() >= 12 { "pm" } else { "am" }.to_string(),
                    "-0700" => zone(false, false, false, false),
                    "-07:00" => zone(true, false, false, false),
                    "-07" => zone(false, false, false, true),
                    "-07:00:00" => zone(true, true, false, false),
                    "Z0700" => zone(false, false, true, false),
                    "Z07:00" => zone(true, false, true, false),
                    "Z07" => zone(false, false, true, true),
                    "Z07:00:00" => zone(true, true, true, false),
                    _ => s.to_string(),
                };
                out.push_str(&piece);
            }
        }
    }
    out
}

fn hour12(h: u8) -> u8 {
    match h % 12 {
        0 => 12,
        x => x,
    }
}

/// Go's `time.ParseInLocation(layout, value, UTC)` for the common elements.
fn parse_layout(layout: &str, value: &str) -> Option<OffsetDateTime> {
    let (mut year, mut month, mut day, mut hour, mut min, mut sec, mut nano) =
        (1i32, 1u8, 1u8, 0u8, 0u8, 0u8, 0u32);
    let mut offset = 0i32;
    let mut pm: Option<bool> = None;
    let mut v = value;
    let num = |v: &mut &str, min_len: usize, max_len: usize| -> Option<i64> {
        let n = v
            .bytes()
            .take(max_len)
            .take_while(u8::is_ascii_digit)
            .count();
        if n < min_len {
            return None;
        }
        let r = v[..n].parse().ok()?;
        *v = &v[n..];
        Some(r)
    };
    for c in chunks(layout) {
        match c {
            Chunk::Lit(l) => {
                let first = l.chars().next();
                let rest = &l[first.map_or(0, char::len_utf8)..];
                if matches!(first, Some('.' | ','))
                    && !rest.is_empty()
                    && rest.bytes().all(|d| d == b'0' || d == b'9')
                {
                    if let Some(r) = v.strip_prefix(['.', ',']) {
                        let n = r.bytes().take_while(u8::is_ascii_digit).count();
                        let digits = format!("{:0<9}", &r[..n.min(9)]);
                        nano = digits.parse().ok()?;
                        v = &r[n..];
                    } else if rest.starts_with('0') {
                        return None;
                    }
                } else {
                    v = v.strip_prefix(l)?;
                }
            }
            Chunk::Std(s) => match s {
                "2006" => year = num(&mut v, 4, 4)? as i32,
                "06" => year = 2000 + num(&mut v, 2, 2)? as i32,
                "01" => month = num(&mut v, 2, 2)? as u8,
                "1" => month = num(&mut v, 1, 2)? as u8,
                "02" => day = num(&mut v, 2, 2)? as u8,
                "_2" => {
                    v = v.strip_prefix(' ').unwrap_or(v);
                    day = num(&mut v, 1, 2)? as u8;
                }
                "2" => day = num(&mut v, 1, 2)? as u8,
                "15" => hour = num(&mut v, 2, 2)? as u8,
                "03" => hour = num(&mut v, 2, 2)? as u8,
                "3" => hour = num(&mut v, 1, 2)? as u8,
                "04" => min = num(&mut v, 2, 2)? as u8,
                "4" => min = num(&mut v, 1, 2)? as u8,
                "05" => sec = num(&mut v, 2, 2)? as u8,
                "5" => sec = num(&mut v, 1, 2)? as u8,
                "PM" | "pm" => {
                    let up = v.get(..2)?.to_ascii_uppercase();
                    pm = Some(up == "PM");
                    v = &v[2..];
                }
                "Jan" | "January" => {
                    let (i, name) = MONTHS.iter().enumerate().find(|(_, m)| {
                        let n = if s == "Jan" { &m[..3] } else { m };
                        v.starts_with(n)
                    })?;
                    month = i as u8 + 1;
                    v = &v[if s == "Jan" { 3 } else { name.len() }..];
                }
                "Mon" | "Monday" => {
                    let name = DAYS
                        .iter()
                        .find(|d| v.starts_with(if s == "Mon" { &d[..3] } else { d }))?;
                    v = &v[if s == "Mon" { 3 } else { name.len() }..];
                }
                "Z07:00" | "Z0700" | "-07:00" | "-0700" => {
                    if s.starts_with('Z') && v.starts_with('Z') {
                        v = &v[1..];
                    } else {
                        let sign = match v.as_bytes().first()? {
                            b'+' => 1,
                            b'-' => -1,
                            _ => return None,
                        };
                        v = &v[1..];
                        let h = num(&mut v, 2, 2)? as i32;
                        if s.contains(':') {
                            v = v.strip_prefix(':')?;
                        }
                        let m = num(&mut v, 2, 2)? as i32;
                        offset = sign * (h * 3600 + m * 60);
                    }
                }
                "MST" => {
                    let n = v.bytes().take_while(u8::is_ascii_uppercase).count();
                    v = &v[n..];
                }
                _ => return None,
            },
        }
    }
    if !v.is_empty() {
        return None;
    }
    if let Some(pm) = pm {
        if pm && hour < 12 {
            hour += 12;
        } else if !pm && hour == 12 {
            hour = 0;
        }
    }
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let t = time::Time::from_hms_nano(hour, min, sec, nano).ok()?;
    let off = UtcOffset::from_whole_seconds(offset).ok()?;
    Some(date.with_time(t).assume_offset(off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_layouts_format_and_parse() {
        let t = parse_layout("2006-01-02T15:04:05Z07:00", "2024-03-09T07:05:01Z");
        let Some(t) = t else { panic!("did not parse") };
        assert_eq!(
            format_layout(t, "2006-01-02 15:04:05"),
            "2024-03-09 07:05:01"
        );
        assert_eq!(format_layout(t, "Jan _2 3:04PM"), "Mar  9 7:05AM");
        assert_eq!(format_layout(t, "Monday, 02-Jan-06"), "Saturday, 09-Mar-24");
    }

    #[test]
    fn durations_print_as_go() {
        assert_eq!(format_duration(Duration::seconds(90)), "1m30s");
        assert_eq!(format_duration(Duration::seconds(3600)), "1h0m0s");
        assert_eq!(format_duration(Duration::milliseconds(1500)), "1.5s");
        assert_eq!(parse_duration("1h30m"), Some(Duration::minutes(90)));
    }
}
