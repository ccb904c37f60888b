//! The Users panel: who may log in, and what each may publish and subscribe to. Passwords are
//! typed twice and never shown, kept or logged; the broker checks the user, hashes the password
//! off its router, saves the users file and applies the change to the next login. Rules apply
//! at once, to connected clients too. A class's accounts can be made at once
//! (`class_accounts`): their generated passwords are shown once and can be exported as CSV.

use std::path::PathBuf;

use crate::broker::acl::Rules;
use crate::broker::{BrokerHandle, Command};

use super::class_accounts;
use super::file_dialog::{Answer, Ask, FileDialog, Purpose};
use super::reply::{self, Notice, Pending};
use super::rules_editor::{self, RulesForm};
use super::runner::Live;

/// State of the Users panel.
#[derive(Default)]
pub struct UsersPanel {
    name: String,
    email: String,
    password: String,
    again: String,
    /// The user whose password is being changed.
    changing: Option<String>,
    notice: Option<Notice>,
    pending: Option<Pending>,
    /// Whose rules are being edited: a user, or (`Some(None)`) clients without a user name.
    editing_rules: Option<Option<String>>,
    rules: RulesForm,
    class: ClassForm,
}

/// The class accounts form, and the accounts just made, whose passwords are shown once.
struct ClassForm {
    pattern: String,
    first: u32,
    count: u32,
    rules: RulesForm,
    /// Accounts asked for, until the broker answers.
    asked: Option<(Pending, Vec<(String, String)>)>,
    /// Accounts made: shown (with their passwords) until the teacher closes the window.
    made: Option<Vec<(String, String)>>,
    export_path: String,
    exporting: Option<std::sync::mpsc::Receiver<Result<String, String>>>,
    export_notice: Option<Notice>,
    dialog: FileDialog,
}

impl Default for ClassForm {
    fn default() -> Self {
        ClassForm {
            pattern: "student{n}".into(),
            first: 1,
            count: 20,
            rules: RulesForm::from_rules(&Rules {
                publish: Some(vec!["students/%u/#".into()]),
                subscribe: Some(vec!["students/#".into()]),
            }),
            asked: None,
            made: None,
            export_path: String::new(),
            exporting: None,
            export_notice: None,
            dialog: FileDialog::default(),
        }
    }
}

impl UsersPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, live: &Live, broker: &BrokerHandle) {
        egui::ScrollArea::vertical()
            .id_salt("users-panel")
            .show(ui, |ui| self.contents(ui, live, broker));
    }

    fn contents(&mut self, ui: &mut egui::Ui, live: &Live, broker: &BrokerHandle) {
        reply::settle(&mut self.pending, &mut self.notice);
        let users = &live.snapshot.users;

        let mut anonymous = users.allow_anonymous;
        if ui
            .checkbox(
                &mut anonymous,
                "Allow anonymous logins (clients without a user name)",
            )
            .changed()
        {
            let what = if anonymous { "allowed" } else { "refused" };
            match Pending::ask(
                broker,
                move |reply| Command::SetAllowAnonymous {
                    allow: anonymous,
                    reply: Some(reply),
                },
                format!("Anonymous logins {what}"),
            ) {
                Ok(p) => self.pending = Some(p),
                Err(n) => self.notice = Some(n),
            }
        }
        if let Some(path) = &live.snapshot.users_path {
            ui.label(format!("Saved to {}", path.display()));
        }
        ui.separator();

        egui::Grid::new("users-grid")
            .striped(true)
            .num_columns(7)
            .show(ui, |ui| {
                for h in [
                    "User",
                    "E-mail",
                    "May publish to",
                    "May subscribe to",
                    "",
                    "",
                    "",
                ] {
                    ui.strong(h);
                }
                ui.end_row();
                ui.label("(no user name)");
                ui.label("—");
                ui.label(rules_editor::summary(&users.anonymous.publish));
                ui.label(rules_editor::summary(&users.anonymous.subscribe));
                if reply::row_button(ui, "Rules", "Rules of clients without a user name").clicked()
                {
                    self.editing_rules = Some(None);
                    self.rules = RulesForm::from_rules(&users.anonymous);
                }
                ui.end_row();
                for u in &users.users {
                    ui.monospace(&u.username);
                    ui.label(u.email.as_deref().unwrap_or("—"));
                    ui.label(rules_editor::summary(&u.rules.publish));
                    ui.label(rules_editor::summary(&u.rules.subscribe));
                    let name = &u.username;
                    if reply::row_button(ui, "Rules", &format!("Rules of {name}")).clicked() {
                        self.editing_rules = Some(Some(name.clone()));
                        self.rules = RulesForm::from_rules(&u.rules);
                    }
                    if reply::row_button(
                        ui,
                        "Change password",
                        &format!("Change password of {name}"),
                    )
                    .clicked()
                    {
                        self.changing = Some(name.clone());
                        self.name = name.clone();
                        self.email = u.email.clone().unwrap_or_default();
                        self.password.clear();
                        self.again.clear();
                    }
                    if reply::row_button(ui, "Delete", &format!("Delete user {name}")).clicked() {
                        let n = name.clone();
                        match Pending::ask(
                            broker,
                            move |reply| Command::RemoveUser {
                                username: n,
                                reply: Some(reply),
                            },
                            format!("Deleted user {name}"),
                        ) {
                            Ok(p) => self.pending = Some(p),
                            Err(n) => self.notice = Some(n),
                        }
                    }
                    ui.end_row();
                }
            });
        if users.users.is_empty() {
            ui.label("No users yet.");
        }
        self.rules_form(ui, broker);
        ui.separator();

        match &self.changing {
            Some(name) => ui.strong(format!("New password for {name}")),
            None => ui.strong("Add a user"),
        };
        egui::Grid::new("user-form").num_columns(2).show(ui, |ui| {
            let l = ui.label("User name");
            ui.add_enabled(
                self.changing.is_none(),
                egui::TextEdit::singleline(&mut self.name).hint_text("e.g. alice"),
            )
            .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("E-mail (optional)");
            ui.add(egui::TextEdit::singleline(&mut self.email).hint_text("e.g. alice@lab.example"))
                .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Password");
            ui.add(egui::TextEdit::singleline(&mut self.password).password(true))
                .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Password again");
            ui.add(egui::TextEdit::singleline(&mut self.again).password(true))
                .labelled_by(l.id);
            ui.end_row();
        });
        ui.horizontal(|ui| {
            let busy = self.pending.is_some();
            let action = if self.changing.is_some() {
                "Set password"
            } else {
                "Add user"
            };
            if ui.add_enabled(!busy, egui::Button::new(action)).clicked() {
                self.submit(live, broker);
            }
            if self.changing.is_some() && ui.button("Cancel").clicked() {
                self.changing = None;
                self.clear();
            }
            if busy {
                ui.spinner();
            }
        });
        reply::show(ui, &self.notice);
        ui.separator();
        self.class_form(ui, live, broker);
        self.made_window(ui);
    }

    /// The rules being edited, with Save and Cancel.
    fn rules_form(&mut self, ui: &mut egui::Ui, broker: &BrokerHandle) {
        let Some(who) = self.editing_rules.clone() else {
            return;
        };
        ui.separator();
        let whose = match &who {
            Some(name) => name.clone(),
            None => "clients without a user name".into(),
        };
        ui.strong(format!("Rules of {whose}"));
        ui.label("Topic filters; %u is the user name, %c the client id. Unticked: any topic the list allows.");
        self.rules.ui(ui, &whose);
        ui.horizontal(|ui| {
            if ui.button("Save rules").clicked() {
                let rules = self.rules.to_rules();
                if let Err(e) = rules.check() {
                    self.notice = Some(Notice::error(format!("Not saved: {e}")));
                    return;
                }
                let done = match &who {
                    Some(n) => format!("Rules of {n} saved"),
                    None => "Rules of anonymous clients saved".into(),
                };
                match Pending::ask(
                    broker,
                    move |reply| Command::SetRules {
                        username: who,
                        rules,
                        reply: Some(reply),
                    },
                    done,
                ) {
                    Ok(p) => {
                        self.pending = Some(p);
                        self.editing_rules = None;
                    }
                    Err(n) => self.notice = Some(n),
                }
            }
            if ui.button("Cancel").clicked() {
                self.editing_rules = None;
            }
        });
    }

    /// Many accounts at once, with generated passwords.
    fn class_form(&mut self, ui: &mut egui::Ui, live: &Live, broker: &BrokerHandle) {
        let c = &mut self.class;
        if let Some((p, accounts)) = &mut c.asked
            && let Some(n) = p.poll()
        {
            if !n.error {
                c.made = Some(std::mem::take(accounts));
            }
            self.notice = Some(n);
            c.asked = None;
        }
        ui.strong("Class accounts");
        ui.horizontal(|ui| {
            let l = ui.label("Names");
            ui.add(egui::TextEdit::singleline(&mut c.pattern).desired_width(140.0))
                .labelled_by(l.id)
                .on_hover_text(
                    "{n} is replaced by the number: student{n} gives student01, student02...",
                );
            let l = ui.label("from");
            ui.add(egui::DragValue::new(&mut c.first).range(0..=99_999))
                .labelled_by(l.id);
            let l = ui.label("how many");
            ui.add(egui::DragValue::new(&mut c.count).range(1..=class_accounts::MAX_BATCH as u32))
                .labelled_by(l.id);
        });
        c.rules.ui(ui, "the new accounts");
        let busy = c.asked.is_some();
        if ui
            .add_enabled(!busy, egui::Button::new("Create accounts"))
            .on_hover_text("Each gets a random password, shown once")
            .clicked()
        {
            let made =
                class_accounts::names(&c.pattern, c.first, c.count as usize).and_then(|names| {
                    match names.iter().find(|n| live.snapshot.users.find(n).is_some()) {
                        Some(taken) => Err(format!("{taken:?} is already a user")),
                        None => Ok(names),
                    }
                });
            let rules = c.rules.to_rules();
            match made.and_then(|names| rules.check().map(|()| names)) {
                Err(e) => self.notice = Some(Notice::error(format!("Not created: {e}"))),
                Ok(names) => {
                    let accounts: Vec<(String, String)> = names
                        .into_iter()
                        .map(|n| (n, class_accounts::password()))
                        .collect();
                    let n = accounts.len();
                    let batch = accounts.clone();
                    match Pending::ask(
                        broker,
                        move |reply| Command::AddUsers {
                            users: batch,
                            rules,
                            reply: Some(reply),
                        },
                        format!("{n} accounts created"),
                    ) {
                        Ok(p) => c.asked = Some((p, accounts)),
                        Err(n) => self.notice = Some(n),
                    }
                }
            }
        }
        if busy {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Hashing the passwords…");
            });
        }
    }

    /// The accounts just made with their passwords, until the teacher closes it: the only time
    /// the passwords are shown.
    fn made_window(&mut self, ui: &mut egui::Ui) {
        let c = &mut self.class;
        if let Some(rx) = &c.exporting
            && let Ok(r) = rx.try_recv()
        {
            c.export_notice = Some(match r {
                Ok(m) => Notice::ok(m),
                Err(e) => Notice::error(e),
            });
            c.exporting = None;
        }
        match c.dialog.poll() {
            Some(Answer::Chosen(_, path)) => {
                c.export_path = path.display().to_string();
                export(c, path);
            }
            Some(Answer::Unavailable) => {
                c.export_notice = Some(Notice::error(
                    "No file dialog on this system: type a path and press Export.",
                ))
            }
            Some(Answer::Cancelled) | None => {}
        }
        let Some(accounts) = c.made.clone() else {
            return;
        };
        let mut close = false;
        egui::Window::new("New accounts")
            .collapsible(false)
            .show(ui.ctx(), |ui| {
                ui.label("These passwords are shown only now: export them or write them down.");
                egui::ScrollArea::vertical()
                    .max_height(300.0)
                    .show(ui, |ui| {
                        egui::Grid::new("new-accounts")
                            .striped(true)
                            .show(ui, |ui| {
                                ui.strong("User");
                                ui.strong("Password");
                                ui.end_row();
                                for (name, password) in &accounts {
                                    ui.monospace(name);
                                    ui.monospace(password);
                                    ui.end_row();
                                }
                            });
                    });
                ui.horizontal(|ui| {
                    let l = ui.label("Export as CSV");
                    ui.add(
                        egui::TextEdit::singleline(&mut c.export_path)
                            .hint_text("accounts.csv")
                            .desired_width(200.0),
                    )
                    .labelled_by(l.id);
                    let busy = c.exporting.is_some() || c.dialog.is_open();
                    if ui
                        .add_enabled(
                            !busy && !c.export_path.trim().is_empty(),
                            egui::Button::new("Export"),
                        )
                        .clicked()
                    {
                        export(c, PathBuf::from(c.export_path.trim()));
                    }
                    if ui
                        .add_enabled(!busy, egui::Button::new("Export as…"))
                        .clicked()
                    {
                        let ctx = ui.ctx().clone();
                        let ask = Ask {
                            title: "Export the accounts",
                            filter: ("Comma-separated values", &["csv"]),
                            file_name: Some("accounts.csv"),
                        };
                        c.dialog
                            .ask(Purpose::SaveAs, ask, None, move || ctx.request_repaint());
                    }
                });
                reply::show(ui, &c.export_notice);
                if ui.button("Done: forget the passwords").clicked() {
                    close = true;
                }
            });
        if close {
            c.made = None;
            c.export_notice = None;
        }
    }

    fn clear(&mut self) {
        self.name.clear();
        self.email.clear();
        self.password.clear();
        self.again.clear();
    }

    fn submit(&mut self, live: &Live, broker: &BrokerHandle) {
        let name = self.name.trim().to_owned();
        let email = Some(self.email.trim().to_owned()).filter(|e| !e.is_empty());
        let problem = if name.is_empty() {
            Some("the user name is empty".to_string())
        } else if self.password.is_empty() {
            Some("the password is empty".into())
        } else if self.password != self.again {
            Some("the two passwords differ".into())
        } else if email
            .as_deref()
            .is_some_and(|e| !e.contains('@') || e.contains(char::is_whitespace))
        {
            Some("the e-mail address is not valid".into())
        } else if self.changing.is_none() && live.snapshot.users.find(&name).is_some() {
            Some(format!("{name:?} is already a user"))
        } else {
            live.snapshot
                .users
                .check_unique(&name, email.as_deref())
                .err()
                .map(|e| e.to_string())
        };
        if let Some(p) = problem {
            self.notice = Some(Notice::error(format!("Not saved: {p}")));
            return;
        }
        // The plain password leaves the form now, for the broker to check and hash.
        let password = std::mem::take(&mut self.password);
        self.again.clear();
        let done = if self.changing.take().is_some() {
            format!("Password of {name} changed")
        } else {
            format!("Added user {name}")
        };
        self.name.clear();
        self.email.clear();
        match Pending::ask(
            broker,
            move |reply| Command::UpsertUser {
                username: name,
                email,
                password,
                reply: Some(reply),
            },
            done,
        ) {
            Ok(p) => self.pending = Some(p),
            Err(n) => self.notice = Some(n),
        }
    }
}

/// Writes the accounts made as CSV, readable by its owner only (it holds passwords), off the
/// window's thread.
fn export(c: &mut ClassForm, path: PathBuf) {
    let Some(accounts) = &c.made else { return };
    let text = class_accounts::csv(accounts);
    let n = accounts.len();
    let (tx, rx) = std::sync::mpsc::channel();
    c.exporting = Some(rx);
    c.export_notice = None;
    std::thread::spawn(move || {
        let result = crate::broker::files::write_atomic_private(&path, text.as_bytes())
            .map(|()| format!("{n} accounts written to {}", path.display()))
            .map_err(|e| e.to_string());
        let _ = tx.send(result);
    });
}
