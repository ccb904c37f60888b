//! Turning broker values into text for the window.

use std::time::{Duration, SystemTime};

use crate::broker::QoS;

/// Local wall-clock time, `HH:MM:SS`.
pub fn clock(t: SystemTime) -> String {
    let local: chrono::DateTime<chrono::Local> = t.into();
    local.format("%H:%M:%S").to_string()
}

/// `1:02` (hours and minutes), or `2d 1:02` past a day: an uptime that changes once a minute.
pub fn uptime(d: Duration) -> String {
    let m = d.as_secs() / 60;
    let (days, h, m) = (m / 1440, m / 60 % 24, m % 60);
    if days > 0 {
        format!("{days}d {h}:{m:02}")
    } else {
        format!("{h}:{m:02}")
    }
}

/// A payload as text when it is printable UTF-8, else as hex; cut to `max` characters.
pub fn payload(bytes: &[u8], max: usize) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            s.replace('\n', "⏎")
        }
        _ => {
            let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x {}", hex.join(" "))
        }
    };
    if text.chars().count() > max {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// An MQTT 5 message's properties in one line: `content type text/plain · reply to lab/r ·
/// k=v`; empty without any.
pub fn props(p: &crate::broker::protocol::MessageProps) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &p.content_type {
        parts.push(format!("content type {t}"));
    }
    if let Some(t) = &p.response_topic {
        parts.push(format!("reply to {t}"));
    }
    if let Some(d) = &p.correlation_data {
        parts.push(format!("correlation {}", payload(d, 16)));
    }
    if p.payload_utf8 {
        parts.push("UTF-8".into());
    }
    if let Some(e) = p.expiry {
        parts.push(format!("expires after {} s", e.secs));
    }
    for (k, v) in &p.user {
        parts.push(format!("{k}={v}"));
    }
    parts.join(" · ")
}

/// Seconds a session outlives its connection, in words.
pub fn session_expiry(secs: u32) -> String {
    match secs {
        0 => "ends with connection".into(),
        u32::MAX => "kept for ever".into(),
        s => format!("kept {s} s"),
    }
}

pub fn qos(q: QoS) -> &'static str {
    match q {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

/// A rate such as `1.2k/s`.
pub fn rate(per_s: f64) -> String {
    if per_s >= 10_000.0 {
        format!("{:.0}k/s", per_s / 1000.0)
    } else if per_s >= 1000.0 {
        format!("{:.1}k/s", per_s / 1000.0)
    } else {
        format!("{per_s:.0}/s")
    }
}

/// A size in bytes, in the unit that keeps it short: "812 B", "4.2 KiB", "63.9 MiB".
pub fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.1} MiB", f / (KIB * KIB))
    } else {
        format!("{:.1} GiB", f / (KIB * KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(payload(b"21.5", 10), "21.5");
        assert_eq!(payload(&[0, 255], 10), "0x 00 ff");
        assert_eq!(payload(b"abcdef", 3), "abc…");
        assert_eq!(payload("é\nb".as_bytes(), 10), "é⏎b");
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(uptime(Duration::from_secs(3723)), "1:02");
        assert_eq!(uptime(Duration::from_secs(90_061)), "1d 1:01");
        assert_eq!(rate(12.4), "12/s");
        assert_eq!(rate(1234.0), "1.2k/s");
        assert_eq!(rate(56_789.0), "57k/s");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(4300), "4.2 KiB");
        assert_eq!(bytes(64 * 1024 * 1024), "64.0 MiB");
    }
}
