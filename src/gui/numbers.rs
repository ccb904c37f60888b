//! Numbers in payloads, for the charts: `21.5`, or the numeric fields of a JSON object
//! (`{"temp": 21.5, "hum": 40}`), the way sensors in a lab publish them.

use std::time::SystemTime;

use crate::broker::history::HistoryItem;

/// The named numbers in one payload: `("value", x)` for a bare number, one per numeric field
/// of a JSON object (nested fields as `a.b`), nothing otherwise.
pub fn numbers(payload: &[u8]) -> Vec<(String, f64)> {
    let Ok(text) = std::str::from_utf8(payload) else {
        return Vec::new();
    };
    let text = text.trim();
    if let Ok(x) = text.parse::<f64>()
        && x.is_finite()
    {
        return vec![("value".into(), x)];
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect("", &json, &mut out);
    out
}

fn collect(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                let name = if prefix.is_empty() { "value" } else { prefix };
                out.push((name.to_owned(), x));
            }
        }
        serde_json::Value::Object(map) if prefix.matches('.').count() < 2 => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect(&name, v, out);
            }
        }
        _ => {}
    }
}

/// A topic's recent values as lines to plot: for each name, (seconds before `now`, value),
/// oldest first. Empty unless at least two of the values are numbers.
pub fn series(history: &[HistoryItem], now: SystemTime) -> Vec<(String, Vec<[f64; 2]>)> {
    let mut lines: Vec<(String, Vec<[f64; 2]>)> = Vec::new();
    let mut numeric = 0;
    for item in history {
        if item.size > item.payload.len() {
            continue; // cut short: not the number it was
        }
        let found = numbers(&item.payload);
        if !found.is_empty() {
            numeric += 1;
        }
        let ago = now
            .duration_since(item.time)
            .map_or(0.0, |d| d.as_secs_f64());
        for (name, x) in found {
            match lines.iter_mut().find(|(n, _)| *n == name) {
                Some((_, points)) => points.push([-ago, x]),
                None => lines.push((name, vec![[-ago, x]])),
            }
        }
    }
    if numeric < 2 {
        lines.clear();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_and_json_fields() {
        assert_eq!(numbers(b" 21.5\n"), [("value".to_owned(), 21.5)]);
        assert_eq!(numbers(b"-3"), [("value".to_owned(), -3.0)]);
        assert!(numbers(b"on").is_empty());
        assert!(numbers(b"NaN").is_empty());
        assert!(numbers(&[0xff, 0x00]).is_empty());
        let mut got = numbers(br#"{"temp": 21.5, "hum": 40, "id": "a", "gps": {"lat": 1.5}}"#);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("gps.lat".to_owned(), 1.5),
                ("hum".to_owned(), 40.0),
                ("temp".to_owned(), 21.5)
            ]
        );
    }
}
