//! Editing what a user (or anonymous clients) may publish and subscribe to: two lists of topic
//! filters, each either off (no limit beyond the topic list) or a list, one filter per line
//! or separated by commas. `%u` is the user name, `%c` the client id.

use crate::broker::acl::Rules;

/// One list being edited: whether it limits anything, and its text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListField {
    pub limited: bool,
    pub text: String,
}

impl ListField {
    pub fn from_rules(list: &Option<Vec<String>>) -> ListField {
        ListField {
            limited: list.is_some(),
            text: list.as_ref().map(|l| l.join(", ")).unwrap_or_default(),
        }
    }

    pub fn to_rules(&self) -> Option<Vec<String>> {
        self.limited.then(|| parse_list(&self.text))
    }

    /// A checkbox and its text field; `what` names the list, `whose` whose it is, for the
    /// field's accessible name.
    pub fn ui(&mut self, ui: &mut egui::Ui, what: &str, whose: &str, hint: &str) {
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.limited, format!("Only {what}:"));
            let label = format!("{what} filters of {whose}");
            ui.add_enabled(
                self.limited,
                egui::TextEdit::singleline(&mut self.text)
                    .hint_text(hint)
                    .desired_width(320.0),
            )
            .widget_info(|| egui::WidgetInfo::labeled(egui::Role::TextInput, self.limited, &label));
        });
    }
}

/// Both lists of one user's (or the anonymous clients') rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesForm {
    pub publish: ListField,
    pub subscribe: ListField,
}

impl RulesForm {
    pub fn from_rules(rules: &Rules) -> RulesForm {
        RulesForm {
            publish: ListField::from_rules(&rules.publish),
            subscribe: ListField::from_rules(&rules.subscribe),
        }
    }

    pub fn to_rules(&self) -> Rules {
        Rules {
            publish: self.publish.to_rules(),
            subscribe: self.subscribe.to_rules(),
        }
    }

    /// `whose`: whose rules they are, for the fields' accessible names.
    pub fn ui(&mut self, ui: &mut egui::Ui, whose: &str) {
        self.publish
            .ui(ui, "publish to", whose, "e.g. students/%u/#");
        self.subscribe
            .ui(ui, "subscribe to", whose, "e.g. students/#, lab/#");
    }
}

/// Filters from a field: split at commas and line ends, trimmed, empty ones left out.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A list of rules as a short text for a table cell.
pub fn summary(list: &Option<Vec<String>>) -> String {
    match list {
        None => "any".into(),
        Some(l) if l.is_empty() => "nothing".into(),
        Some(l) => l.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_rules() {
        let rules = Rules {
            publish: Some(vec!["students/%u/#".into(), "lab/%c".into()]),
            subscribe: None,
        };
        let form = RulesForm::from_rules(&rules);
        assert_eq!(form.publish.text, "students/%u/#, lab/%c");
        assert!(!form.subscribe.limited);
        assert_eq!(form.to_rules(), rules);
        assert_eq!(parse_list(" a/#,\n b , ,"), vec!["a/#", "b"]);
        assert_eq!(summary(&None), "any");
        assert_eq!(summary(&Some(vec![])), "nothing");
    }
}
