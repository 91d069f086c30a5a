//! Stop strings in text that arrives in pieces, token by token.

/// Hands out generated text as soon as it can no longer be the start of a stop string, and,
/// once a stop string appears, everything before it.
#[derive(Debug, Clone, Default)]
pub struct StopScanner {
    stops: Vec<String>,
    /// Text not yet handed out: it may be the beginning of a stop string.
    held: String,
}

impl StopScanner {
    pub fn new(stops: Vec<String>) -> StopScanner {
        StopScanner { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Adds `text`. Returns the text that can be handed out, and the stop string if one was
    /// reached: the text from it on is dropped, and the generation should end.
    pub fn push(&mut self, text: &str) -> (String, Option<String>) {
        self.held += text;
        // Only what is held is searched (a stop string may be long: a request's are capped in
        // number, not in length), so a token costs no more than the held text.
        let held = self.held.len();
        let first = (self.stops.iter())
            .filter(|s| s.len() <= held)
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min();
        if let Some((at, stop)) = first {
            let stop = stop.clone();
            let text = self.held[..at].to_string();
            self.held.clear();
            return (text, Some(stop));
        }
        let keep = self
            .stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len().min(held + 1)).filter(|&n| stop.is_char_boundary(n)).map(move |n| &stop[..n])
            })
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        (std::mem::replace(&mut self.held, rest), None)
    }

    /// Whatever is held back, at the end of a generation that reached no stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::StopScanner;

    #[test]
    fn holds_back_what_may_begin_a_stop_and_cuts_at_the_first() {
        let mut scanner = StopScanner::new(vec!["\n\n".into(), "END".into()]);
        assert_eq!(scanner.push("Hello\n"), ("Hello".into(), None));
        assert_eq!(scanner.push("world E"), ("\nworld ".into(), None));
        assert_eq!(scanner.push("N"), (String::new(), None));
        assert_eq!(scanner.push("D and more"), (String::new(), Some("END".into())));
        let mut scanner = StopScanner::new(vec!["ab".into()]);
        assert_eq!(scanner.push("xa"), ("x".into(), None));
        assert_eq!(scanner.finish(), "a");
    }

    /// A stop string much longer than the text is held back as the text begins it, handed out
    /// where the text parts from it, and found across many pieces.
    #[test]
    fn long_stop_strings_are_held_and_found_across_pieces() {
        let stop = format!("{}!", "ab".repeat(500));
        let mut scanner = StopScanner::new(vec![stop.clone(), "END".into()]);
        assert_eq!(scanner.push("x"), ("x".into(), None));
        for _ in 0..500 {
            assert_eq!(scanner.push("ab"), (String::new(), None));
        }
        assert_eq!(scanner.push("z"), (format!("{}z", &stop[..1000]), None));
        for _ in 0..500 {
            assert_eq!(scanner.push("ab"), (String::new(), None));
        }
        assert_eq!(scanner.push("! and more"), (String::new(), Some(stop)));
    }
}
