//! Log-probabilities in OpenAI's two shapes: chat's list of tokens, and completions' columns.

use serde_json::{json, Map, Value};

use super::scheduler::{ReportedToken, TokenReport};

/// A reply's token reports, rendered for its endpoint; a stream renders each once.
#[derive(Default)]
pub struct Reports {
    pending: Vec<TokenReport>,
    /// Characters of the completion before the pending reports (completions' `text_offset`).
    offset: usize,
}

impl Reports {
    pub fn push(&mut self, report: TokenReport) {
        self.pending.push(report);
    }

    /// The pending reports as `chat` or completions show them, then forgets them.
    pub fn take(&mut self, chat: bool) -> Value {
        let reports = std::mem::take(&mut self.pending);
        if chat {
            let entry =
                |t: &ReportedToken| json!({ "token": t.text, "logprob": t.logprob, "bytes": t.bytes });
            let content: Vec<Value> = reports
                .iter()
                .map(|r| {
                    let mut e = entry(&r.chosen);
                    e["top_logprobs"] = r.top.iter().map(entry).collect();
                    e
                })
                .collect();
            return json!({ "content": content });
        }
        let mut offsets = Vec::with_capacity(reports.len());
        for report in &reports {
            offsets.push(self.offset);
            self.offset += report.chosen.text.chars().count();
        }
        let top: Vec<Value> = reports
            .iter()
            .map(|r| {
                Value::Object(r.top.iter().map(|t| (t.text.clone(), json!(t.logprob))).collect::<Map<_, _>>())
            })
            .collect();
        json!({
            "tokens": reports.iter().map(|r| r.chosen.text.clone()).collect::<Vec<_>>(),
            "token_logprobs": reports.iter().map(|r| r.chosen.logprob).collect::<Vec<_>>(),
            "top_logprobs": top,
            "text_offset": offsets,
        })
    }
}
