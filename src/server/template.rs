//! How chat messages become a prompt: RWKV's "User: …\n\nAssistant:" form by default.

use serde::Deserialize;

use super::error::ApiError;

/// The chat template, read from a JSON file with these fields (`--chat-template`). In each
/// message form `{content}` stands for the message's text.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatTemplate {
    pub system: String,
    pub user: String,
    pub assistant: String,
    /// The start of the model's reply, which it continues.
    pub reply: String,
    /// Where a reply ends (besides the request's own stop strings).
    pub stop: Vec<String>,
    /// Blank lines end a turn in RWKV's chat data, so a message's own blank lines become single
    /// line breaks.
    pub collapse_blank_lines: bool,
}

impl Default for ChatTemplate {
    fn default() -> Self {
        ChatTemplate {
            system: "System: {content}\n\n".into(),
            user: "User: {content}\n\n".into(),
            assistant: "Assistant: {content}\n\n".into(),
            reply: "Assistant:".into(),
            stop: vec!["\n\n".into()],
            collapse_blank_lines: true,
        }
    }
}

impl ChatTemplate {
    /// The prompt as pieces, each encoded on its own so that a conversation's next turn starts
    /// with exactly the tokens of the previous one (whose states the cache holds): one piece per
    /// message, an assistant message split after the reply's start (as the model continued it),
    /// and the reply's start last.
    pub fn render(&self, messages: &[(String, String)]) -> Result<Vec<String>, ApiError> {
        let mut pieces = Vec::new();
        for (role, content) in messages {
            let content = self.clean(content);
            let form = match role.as_str() {
                "system" | "developer" => &self.system,
                "user" => &self.user,
                "assistant" => &self.assistant,
                other => {
                    return Err(ApiError::bad_param(
                        "messages",
                        format!("unknown role `{other}`: use system, user or assistant"),
                    ))
                }
            };
            let text = form.replace("{content}", &content);
            match text.strip_prefix(self.reply.as_str()) {
                Some(rest) if role == "assistant" && !self.reply.is_empty() => {
                    pieces.push(self.reply.clone());
                    pieces.push(rest.to_string());
                }
                _ => pieces.push(text),
            }
        }
        pieces.push(self.reply.clone());
        Ok(pieces)
    }

    fn clean(&self, content: &str) -> String {
        let mut text = content.replace("\r\n", "\n").trim().to_string();
        if self.collapse_blank_lines {
            while text.contains("\n\n") {
                text = text.replace("\n\n", "\n");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::ChatTemplate;

    #[test]
    fn renders_rwkv_chat_form() {
        let messages = [
            ("system".to_string(), "Be brief.".to_string()),
            ("user".into(), "Hi!\n\nHow are you?".into()),
            ("assistant".into(), "Fine.".into()),
            ("user".into(), "Good.".into()),
        ];
        let pieces = ChatTemplate::default().render(&messages).unwrap();
        assert_eq!(
            pieces,
            [
                "System: Be brief.\n\n",
                "User: Hi!\nHow are you?\n\n",
                "Assistant:",
                " Fine.\n\n",
                "User: Good.\n\n",
                "Assistant:"
            ]
        );
        assert!(ChatTemplate::default().render(&[("robot".into(), "x".into())]).is_err());
    }
}
