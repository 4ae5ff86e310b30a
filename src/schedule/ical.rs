//! iCalendar (RFC 5545) import and export of scheduled meetings.
//!
//! Import reads VEVENTs with the `icalendar` crate's parser (unfolding included) and keeps
//! what a meeting needs: UID, RECURRENCE-ID, SUMMARY, DESCRIPTION, DTSTART/DTEND (or
//! DURATION) with their TZID, RRULE (our subset), EXDATE, STATUS. Zones: IANA names as Google
//! and Apple write them, Windows names as Outlook writes them (mapped), UTC times (`Z`).
//! Each event is keyed by UID + RECURRENCE-ID, so importing an updated file updates what the
//! first import made instead of adding copies; a RECURRENCE-ID with STATUS:CANCELLED cancels
//! that one occurrence (an EXDATE of its series). Export writes one VEVENT per series with
//! TZID times, so a 09:00 Berlin meeting stays at 09:00 in the calendar app too.

use chrono::{NaiveDate, NaiveDateTime};

/// One event of an imported file.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// UID.
    pub uid: String,
    /// RECURRENCE-ID as a local time in the event's zone (empty for the series itself).
    pub recurrence_id: String,
    /// SUMMARY.
    pub title: String,
    /// DESCRIPTION.
    pub description: String,
    /// IANA zone.
    pub time_zone: String,
    /// DTSTART, local.
    pub start: NaiveDateTime,
    /// Length, ms.
    pub duration_ms: i64,
    /// RRULE value.
    pub rrule: Option<String>,
    /// EXDATEs, local.
    pub exdates: Vec<NaiveDateTime>,
    /// STATUS:CANCELLED.
    pub cancelled: bool,
}

/// Windows zone names (as Outlook writes TZID) to IANA, for the zones users most often have.
const WINDOWS_ZONES: [(&str, &str); 24] = [
    ("UTC", "UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kyiv"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Eastern Standard Time", "America/New_York"),
    ("Central Standard Time", "America/Chicago"),
    ("Mountain Standard Time", "America/Denver"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("India Standard Time", "Asia/Kolkata"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
];

/// The IANA name for a TZID as calendar apps write it.
pub fn iana_zone(tzid: &str) -> Option<String> {
    let t = tzid.trim().trim_matches('"');
    if let Some((_, iana)) = WINDOWS_ZONES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(t))
    {
        return Some((*iana).to_owned());
    }
    // Some exporters prefix IANA names ("/mozilla.org/20070129_1/Europe/Berlin").
    let candidate = t
        .rsplit_once("/20")
        .map_or(t, |(_, rest)| rest.split_once('/').map_or(t, |(_, z)| z));
    [t, candidate]
        .into_iter()
        .find(|c| c.parse::<chrono_tz::Tz>().is_ok())
        .map(str::to_owned)
}

/// A date-time value with its TZID (or `Z`): the local time and the zone name.
fn date_time(
    value: &str,
    tzid: Option<&str>,
    fallback_zone: &str,
) -> Result<(NaiveDateTime, String), String> {
    let v = value.trim();
    if v.len() == 8 {
        // An all-day date: midnight local (meetings rarely are; kept rather than refused).
        let d = NaiveDate::parse_from_str(v, "%Y%m%d").map_err(|_| format!("bad date {v:?}"))?;
        return Ok((
            d.and_hms_opt(0, 0, 0).expect("midnight"),
            fallback_zone.to_owned(),
        ));
    }
    if let Some(utc) = v.strip_suffix('Z') {
        let t = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
            .map_err(|_| format!("bad time {v:?}"))?;
        return Ok((t, "UTC".to_owned()));
    }
    let t =
        NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").map_err(|_| format!("bad time {v:?}"))?;
    let zone = match tzid {
        Some(z) => iana_zone(z).ok_or_else(|| format!("unknown time zone {z:?}"))?,
        None => fallback_zone.to_owned(),
    };
    Ok((t, zone))
}

/// Local time `t` of zone `from` as the wall-clock time of zone `to` (EXDATEs and
/// RECURRENCE-IDs may name another zone than their event's DTSTART).
fn in_zone(t: NaiveDateTime, from: &str, to: &str) -> Result<NaiveDateTime, String> {
    if from == to {
        return Ok(t);
    }
    let zone = |z: &str| {
        z.parse::<chrono_tz::Tz>()
            .map_err(|_| format!("unknown time zone {z:?}"))
    };
    Ok(super::recurrence::to_utc(zone(from)?, t)
        .with_timezone(&zone(to)?)
        .naive_local())
}

/// `PT1H30M`, `P1D`, `PT45M` ... as ms.
fn duration_ms(v: &str) -> Option<i64> {
    let v = v.trim().strip_prefix('P')?;
    let (days, time) = match v.split_once('T') {
        Some((d, t)) => (d, t),
        None => (v, ""),
    };
    let mut ms = 0i64;
    let mut num = String::new();
    for c in days.chars() {
        match c {
            '0'..='9' => num.push(c),
            'W' => ms += num.parse::<i64>().ok()? * 7 * 86_400_000,
            'D' => ms += num.parse::<i64>().ok()? * 86_400_000,
            _ => return None,
        }
        if !c.is_ascii_digit() {
            num.clear();
        }
    }
    for c in time.chars() {
        match c {
            '0'..='9' => num.push(c),
            'H' => ms += num.parse::<i64>().ok()? * 3_600_000,
            'M' => ms += num.parse::<i64>().ok()? * 60_000,
            'S' => ms += num.parse::<i64>().ok()? * 1_000,
            _ => return None,
        }
        if !c.is_ascii_digit() {
            num.clear();
        }
    }
    Some(ms)
}

/// The events of an iCalendar file, and for each refused one its UID (or position) and why.
pub fn parse(text: &str) -> Result<(Vec<Imported>, Vec<(String, String)>), String> {
    let unfolded = icalendar::parser::unfold(text);
    let cal = icalendar::parser::read_calendar(&unfolded)
        .map_err(|e| format!("not an iCalendar file: {e}"))?;
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for (i, c) in cal
        .components
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name == "VEVENT")
    {
        let prop = |name: &str| c.properties.iter().find(|p| p.name == name);
        let tzid = |p: &icalendar::parser::Property| {
            p.params
                .iter()
                .find(|x| x.key == "TZID")
                .and_then(|x| x.val.as_ref().map(|v| v.as_str().to_owned()))
        };
        let uid = prop("UID")
            .map(|p| p.val.as_str().to_owned())
            .unwrap_or_default();
        let label = if uid.is_empty() {
            format!("event {}", i + 1)
        } else {
            uid.clone()
        };
        let event = (|| -> Result<Imported, String> {
            if uid.is_empty() {
                return Err("no UID".into());
            }
            let ds = prop("DTSTART").ok_or("no DTSTART")?;
            let (start, zone) = date_time(ds.val.as_str(), tzid(ds).as_deref(), "UTC")?;
            let duration = match (prop("DTEND"), prop("DURATION")) {
                (Some(de), _) => {
                    let (end, end_zone) = date_time(de.val.as_str(), tzid(de).as_deref(), &zone)?;
                    let tz_s: chrono_tz::Tz = zone.parse().map_err(|_| "zone")?;
                    let tz_e: chrono_tz::Tz = end_zone.parse().map_err(|_| "zone")?;
                    super::recurrence::to_utc(tz_e, end).timestamp_millis()
                        - super::recurrence::to_utc(tz_s, start).timestamp_millis()
                }
                (None, Some(d)) => duration_ms(d.val.as_str()).ok_or("bad DURATION")?,
                (None, None) => 3_600_000,
            };
            let mut exdates = Vec::new();
            for p in c.properties.iter().filter(|p| p.name == "EXDATE") {
                for v in p.val.as_str().split(',') {
                    let (t, z) = date_time(v, tzid(p).as_deref(), &zone)?;
                    exdates.push(in_zone(t, &z, &zone)?);
                }
            }
            let recurrence_id = match prop("RECURRENCE-ID") {
                Some(r) => {
                    let (t, z) = date_time(r.val.as_str(), tzid(r).as_deref(), &zone)?;
                    in_zone(t, &z, &zone)?
                        .format(super::LOCAL_FORMAT)
                        .to_string()
                }
                None => String::new(),
            };
            let rrule = prop("RRULE").map(|p| p.val.as_str().to_owned());
            if let Some(r) = &rrule {
                super::recurrence::Rule::parse(r).map_err(|e| e.to_string())?;
            }
            let text = |name: &str| {
                prop(name)
                    .map(|p| p.val.clone().unescape_text().as_str().to_owned())
                    .unwrap_or_default()
            };
            Ok(Imported {
                uid: uid.clone(),
                recurrence_id,
                title: {
                    let t = text("SUMMARY");
                    if t.trim().is_empty() {
                        "(no title)".to_owned()
                    } else {
                        t
                    }
                },
                description: text("DESCRIPTION"),
                time_zone: zone,
                start,
                duration_ms: duration,
                rrule,
                exdates,
                cancelled: prop("STATUS")
                    .is_some_and(|p| p.val.as_str().eq_ignore_ascii_case("CANCELLED")),
            })
        })();
        match event {
            Ok(e) => out.push(e),
            Err(why) => refused.push((label, why)),
        }
    }
    Ok((out, refused))
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
        .replace('\n', "\\n")
        .replace('\r', "")
}

/// Folds a content line at 75 octets (RFC 5545 §3.1), never inside a UTF-8 character.
fn fold(line: &str) -> String {
    let mut out = String::new();
    let mut len = 0;
    for ch in line.chars() {
        let n = ch.len_utf8();
        if len + n > 75 {
            out.push_str("\r\n ");
            len = 1;
        }
        out.push(ch);
        len += n;
    }
    out.push_str("\r\n");
    out
}

/// One VCALENDAR with a VEVENT per series; `base_url` makes the meeting links absolute.
pub fn export(series: &[crate::store::ScheduleRecord], base_url: &str, now_ms: i64) -> String {
    let stamp = chrono::DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut out = String::new();
    for l in [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Conclave//Scheduled meetings//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
    ] {
        out.push_str(&fold(l));
    }
    for s in series {
        let local = |t: &str| {
            NaiveDateTime::parse_from_str(t, super::LOCAL_FORMAT)
                .map(|t| t.format("%Y%m%dT%H%M%S").to_string())
                .unwrap_or_default()
        };
        let start = local(&s.spec.start_local);
        let end = NaiveDateTime::parse_from_str(&s.spec.start_local, super::LOCAL_FORMAT)
            .ok()
            .and_then(|t| {
                let tz: chrono_tz::Tz = s.spec.time_zone.parse().ok()?;
                let end_utc = super::recurrence::to_utc(tz, t)
                    + chrono::Duration::milliseconds(s.spec.duration_ms);
                Some(
                    end_utc
                        .with_timezone(&tz)
                        .naive_local()
                        .format("%Y%m%dT%H%M%S")
                        .to_string(),
                )
            })
            .unwrap_or_default();
        let url = format!("{}/m/{}", base_url.trim_end_matches('/'), s.meeting_code);
        let uid = format!("conclave-{}-{}", s.id, s.meeting_code);
        let tz = &s.spec.time_zone;
        let mut lines = vec![
            "BEGIN:VEVENT".to_owned(),
            format!("UID:{uid}"),
            format!("DTSTAMP:{stamp}"),
            format!("DTSTART;TZID={tz}:{start}"),
            format!("DTEND;TZID={tz}:{end}"),
            format!("SUMMARY:{}", escape(&s.spec.title)),
            format!(
                "DESCRIPTION:{}",
                escape(
                    &format!("{}\n\nJoin: {url}", s.spec.description)
                        .trim_start()
                        .to_owned()
                )
            ),
            format!("LOCATION:{}", escape(&url)),
            format!("URL:{url}"),
            format!("SEQUENCE:{}", s.version),
            format!(
                "STATUS:{}",
                if s.status == "cancelled" {
                    "CANCELLED"
                } else {
                    "CONFIRMED"
                }
            ),
        ];
        if let Some(r) = &s.spec.rrule {
            lines.push(format!("RRULE:{r}"));
        }
        for e in &s.spec.exdates {
            lines.push(format!("EXDATE;TZID={tz}:{}", local(e)));
        }
        lines.push("END:VEVENT".to_owned());
        for l in lines {
            out.push_str(&fold(&l));
        }
    }
    out.push_str(&fold("END:VCALENDAR"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_as_calendar_apps_write_them() {
        assert_eq!(iana_zone("Europe/Berlin").as_deref(), Some("Europe/Berlin"));
        assert_eq!(
            iana_zone("W. Europe Standard Time").as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(
            iana_zone("\"Pacific Standard Time\"").as_deref(),
            Some("America/Los_Angeles")
        );
        assert_eq!(
            iana_zone("/mozilla.org/20070129_1/Europe/Paris").as_deref(),
            Some("Europe/Paris")
        );
        assert_eq!(iana_zone("Middle Earth Standard Time"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("PT1H30M"), Some(5_400_000));
        assert_eq!(duration_ms("PT45M"), Some(2_700_000));
        assert_eq!(duration_ms("P1DT2H"), Some(93_600_000));
        assert_eq!(duration_ms("P1W"), Some(604_800_000));
        assert_eq!(duration_ms("1H"), None);
    }

    #[test]
    fn long_lines_fold_at_75_octets_without_splitting_characters() {
        let line = format!("SUMMARY:{}", "Grüße ".repeat(20));
        let folded = fold(&line);
        for l in folded.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75, "{l:?} is {} octets", l.len());
        }
        assert_eq!(
            folded.replace("\r\n ", "").strip_suffix("\r\n"),
            Some(line.as_str())
        );
    }
}
