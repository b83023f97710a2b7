//! [`LogCursor`]: reads a container's log a poll at a time without reading it all again.
//!
//! Each poll asks for timestamped lines since the last line forwarded (`sinceTime`, which the
//! API takes in whole seconds), and the cursor drops the lines of that second it has already
//! forwarded. A build's log is then read about once however long it runs.

use k8s_openapi::jiff::Timestamp;
use kube::api::LogParams;
use std::cmp::Ordering;

/// How far a container's log has been forwarded.
#[derive(Debug, Clone, Default)]
pub struct LogCursor {
    /// The timestamp of the last line forwarded.
    last: Option<Timestamp>,
    /// How many lines with exactly that timestamp were forwarded.
    at_last: usize,
}

impl LogCursor {
    /// The parameters of the next read of `container`'s log.
    pub fn params(&self, container: &str) -> LogParams {
        LogParams {
            container: Some(container.into()),
            timestamps: true,
            // Whole seconds, rounded down: kube would round to the nearest second and could
            // skip the end of the last second.
            since_time: self
                .last
                .and_then(|last| Timestamp::from_second(last.as_second()).ok()),
            ..Default::default()
        }
    }

    /// The lines of `text` (read with [`Self::params`]) not forwarded before, without their
    /// timestamps; the cursor moves past them. A line without a timestamp is always new.
    pub fn advance<'a>(&mut self, text: &'a str) -> Vec<&'a str> {
        let mut new = Vec::new();
        let mut same = 0;
        for line in text.lines() {
            let Some((at, rest)) = line
                .split_once(' ')
                .and_then(|(at, rest)| Some((at.parse::<Timestamp>().ok()?, rest)))
            else {
                new.push(line);
                continue;
            };
            match self.last.map(|last| at.cmp(&last)) {
                Some(Ordering::Less) => continue,
                Some(Ordering::Equal) => {
                    same += 1;
                    if same <= self.at_last {
                        continue;
                    }
                    self.at_last += 1;
                }
                _ => {
                    self.last = Some(at);
                    self.at_last = 1;
                    same = 1;
                }
            }
            new.push(rest);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubelet's answer to `params`: the lines at or after `sinceTime`.
    fn answer(log: &[(&str, &str)], params: &LogParams) -> String {
        log.iter()
            .filter(|(at, _)| {
                params
                    .since_time
                    .is_none_or(|since| at.parse::<Timestamp>().unwrap() >= since)
            })
            .map(|(at, line)| format!("{at} {line}\n"))
            .collect()
    }

    #[test]
    fn each_line_is_forwarded_once_across_polls() {
        let full = [
            ("2026-11-25T10:00:00.100Z", "unpacking"),
            ("2026-11-25T10:00:01.200Z", "smoke prediction"),
            ("2026-11-25T10:00:01.200Z", "the same instant"),
            ("2026-11-25T10:00:01.700Z", "later in that second"),
            ("2026-11-25T10:00:02.999999999Z", "pushing"),
            ("2026-11-25T10:00:02.999999999Z", "pushed"),
        ];
        let mut cursor = LogCursor::default();
        let mut forwarded = Vec::new();
        // The log grows between polls, sometimes by nothing, sometimes mid-second.
        for upto in [0, 1, 2, 2, 3, 4, 5, 6, 6] {
            let params = cursor.params("build");
            assert_eq!(params.container.as_deref(), Some("build"));
            assert!(params.timestamps);
            let text = answer(&full[..upto], &params);
            forwarded.extend(cursor.advance(&text).into_iter().map(str::to_owned));
        }
        let lines: Vec<&str> = full.iter().map(|(_, line)| *line).collect();
        assert_eq!(forwarded, lines);
    }

    #[test]
    fn reads_start_at_the_last_lines_second_rounded_down() {
        let mut cursor = LogCursor::default();
        assert_eq!(cursor.params("prepare").since_time, None);
        cursor.advance("2026-11-25T10:00:01.900Z one\n");
        assert_eq!(
            cursor.params("prepare").since_time,
            Some("2026-11-25T10:00:01Z".parse().unwrap())
        );
    }

    #[test]
    fn lines_without_a_timestamp_are_kept_whole() {
        let mut cursor = LogCursor::default();
        assert_eq!(
            cursor.advance("no timestamp here\n\n"),
            ["no timestamp here", ""]
        );
    }
}
