//! The results as a Markdown table, JSON and an SVG chart, all written by
//! hand to keep the bench's dependencies to the peers themselves.

use std::fmt::Write;

/// One client in one scenario.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub client: String,
    pub requests_per_sec: Option<f64>,
    pub bytes_per_sec: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub allocations_per_request: Option<f64>,
    pub requests: u64,
    pub failures: u64,
    /// The rate of each round, in the order the rounds ran.
    pub round_rates: Vec<f64>,
    /// For h2pool's rows: the ratio its target is stated in.
    pub target: Option<Target>,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub against: String,
    /// The median rate over the reference's median rate.
    pub ratio: f64,
    pub goal: f64,
    /// Round by round (the two ran back to back in each round): how many
    /// rounds met the goal, of how many, and the lowest and highest ratio.
    /// The spread is the machine's noise.
    pub rounds_met: usize,
    pub rounds: usize,
    pub low: f64,
    pub high: f64,
}

impl Row {
    /// The scenario's measure of throughput: bytes/s for transfers,
    /// requests/s otherwise.
    pub fn rate(&self) -> Option<f64> {
        self.bytes_per_sec.or(self.requests_per_sec)
    }

    fn throughput(&self) -> String {
        match (self.bytes_per_sec, self.requests_per_sec) {
            (Some(bytes), _) => format!("{:.0} MiB/s", bytes / (1024.0 * 1024.0)),
            (None, Some(requests)) => format!("{requests:.0} req/s"),
            (None, None) => "-".to_owned(),
        }
    }
}

pub struct Description {
    pub server: &'static str,
    pub measure_secs: f64,
    pub rounds: usize,
}

/// The scenarios in the order they ran, each with its rows.
fn scenarios(rows: &[Row]) -> Vec<(&str, Vec<&Row>)> {
    let mut groups: Vec<(&str, Vec<&Row>)> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|(name, _)| *name == row.scenario) {
            Some((_, group)) => group.push(row),
            None => groups.push((&row.scenario, vec![row])),
        }
    }
    groups
}

fn ratio_to(group: &[&Row], row: &Row, client: &str) -> Option<f64> {
    let reference = group.iter().find(|other| other.client == client)?.rate()?;
    Some(row.rate()? / reference)
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.decimals$}"))
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | client | throughput | p50 ms | p99 ms | allocs/req | failures | vs raw h2 | vs hyper-util | h2pool target |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (scenario, group) in scenarios(rows) {
        for row in &group {
            let ratio = |client| optional(ratio_to(&group, row, client), 2);
            let target = row.target.as_ref().map_or_else(String::new, |target| {
                let verdict = if target.ratio >= target.goal {
                    "met"
                } else {
                    "short"
                };
                format!(
                    "{:.3}x {} (goal {:.2}x): {verdict}; rounds {:.2}-{:.2}, {} of {} met",
                    target.ratio,
                    target.against,
                    target.goal,
                    target.low,
                    target.high,
                    target.rounds_met,
                    target.rounds
                )
            });
            let _ = writeln!(
                out,
                "| {scenario} | {} | {} | {} | {} | {} | {} | {} | {} | {target} |",
                row.client,
                row.throughput(),
                optional(row.p50_ms, 3),
                optional(row.p99_ms, 3),
                optional(row.allocations_per_request, 1),
                row.failures,
                ratio("raw h2"),
                ratio("hyper-util"),
            );
        }
    }
    out
}

fn json_number(value: Option<f64>) -> String {
    match value {
        Some(value) if value.is_finite() => format!("{value:.4}"),
        _ => "null".to_owned(),
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn json(rows: &[Row], description: &Description) -> String {
    let mut out = format!(
        "{{\n  \"server\": {},\n  \"measure_secs\": {},\n  \"rounds\": {},\n  \"rows\": [\n",
        json_string(description.server),
        description.measure_secs,
        description.rounds
    );
    for (index, row) in rows.iter().enumerate() {
        let target = row.target.as_ref().map_or_else(
            || "null".to_owned(),
            |target| {
                format!(
                    "{{\"against\": {}, \"ratio\": {}, \"goal\": {}, \"rounds\": {}, \"rounds_met\": {}, \"round_ratio_low\": {}, \"round_ratio_high\": {}}}",
                    json_string(&target.against),
                    json_number(Some(target.ratio)),
                    json_number(Some(target.goal)),
                    target.rounds,
                    target.rounds_met,
                    json_number(Some(target.low)),
                    json_number(Some(target.high))
                )
            },
        );
        let _ = write!(
            out,
            "    {{\"scenario\": {}, \"client\": {}, \"requests_per_sec\": {}, \"bytes_per_sec\": {}, \
             \"p50_ms\": {}, \"p99_ms\": {}, \"allocations_per_request\": {}, \"requests\": {}, \
             \"failures\": {}, \"target\": {target}}}",
            json_string(&row.scenario),
            json_string(&row.client),
            json_number(row.requests_per_sec),
            json_number(row.bytes_per_sec),
            json_number(row.p50_ms),
            json_number(row.p99_ms),
            json_number(row.allocations_per_request),
            row.requests,
            row.failures,
        );
        out.push_str(if index + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ]\n}\n");
    out
}

fn colour(client: &str) -> &'static str {
    match client {
        "raw h2" => "#8c8c8c",
        "h2pool" | "h2pool under tonic" => "#1f6fb2",
        "h2pool, no stream limit" | "h2pool, no GOAWAY" => "#8fbde6",
        "hyper-util" => "#e08a2c",
        crate::SPREAD_LABEL => "#2b9e6b",
        _ => "#7b5bb5",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars, one group per scenario, each bar scaled to the fastest
/// client of its scenario and labelled with its rate and its ratio to raw
/// h2 (or, where raw h2 did not run, to the scenario's first client).
pub fn svg(rows: &[Row]) -> String {
    const WIDTH: f64 = 960.0;
    const LABEL: f64 = 190.0;
    const BAR_SPACE: f64 = 470.0;
    const BAR: f64 = 16.0;
    const GAP: f64 = 4.0;
    const HEADING: f64 = 26.0;
    let groups = scenarios(rows);
    let height = 50.0
        + groups
            .iter()
            .map(|(_, group)| HEADING + group.len() as f64 * (BAR + GAP) + 8.0)
            .sum::<f64>();
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">h2pool and its peers \
         (cargo bench --bench peers; longer is faster)</text>\n"
    );
    let mut y = 50.0;
    for (scenario, group) in groups {
        let _ = writeln!(
            out,
            "<text x=\"10\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
            y + 14.0,
            escape(scenario)
        );
        y += HEADING;
        let fastest = group
            .iter()
            .filter_map(|row| row.rate())
            .fold(0.0, f64::max);
        let reference = group
            .iter()
            .find(|row| row.client == "raw h2")
            .or(group.first())
            .map(|row| (row.client.clone(), row.rate()));
        for row in &group {
            let rate = row.rate().unwrap_or(0.0);
            let length = if fastest > 0.0 {
                rate / fastest * BAR_SPACE
            } else {
                0.0
            };
            let mut label = row.throughput();
            if let Some((name, Some(reference))) = &reference {
                if name != &row.client && *reference > 0.0 {
                    let _ = write!(label, "  {:.2}x {name}", rate / reference);
                }
            }
            if row.failures > 0 {
                let _ = write!(label, "  {} failed", row.failures);
            }
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
                 <rect x=\"{LABEL}\" y=\"{y:.1}\" width=\"{length:.1}\" height=\"{BAR}\" fill=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                LABEL - 8.0,
                y + 12.0,
                escape(&row.client),
                colour(&row.client),
                LABEL + length + 6.0,
                y + 12.0,
                escape(&label),
            );
            y += BAR + GAP;
        }
        y += 8.0;
    }
    out.push_str("</svg>\n");
    out
}
