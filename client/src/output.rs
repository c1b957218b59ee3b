//! Output in python-openstackclient's formats (`-f table|json|yaml|value`, `-c COLUMN`).
//!
//! A [`Record`] is an ordered list of fields, each with a machine-readable JSON value
//! (used by `json` and `yaml`) and optionally a human-readable text (used by `table` and
//! `value`). Rendering functions return the text to print and never print themselves.

use std::fmt::Write as _;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use crate::auth::TokenInfo;
use crate::container::ContainerView;

/// Output format, as `-f` selects it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// ASCII table with `+---+` borders.
    #[default]
    Table,
    /// Pretty-printed JSON.
    Json,
    /// YAML.
    Yaml,
    /// Values only: one per line for a single object, space separated per row for lists.
    Value,
}

/// One named field of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Column name, e.g. `status`.
    pub name: String,
    /// Machine-readable value.
    pub value: Value,
    /// Human-readable text, when the default rendering of `value` is not the best one.
    pub display: Option<String>,
}

impl Field {
    /// The text shown in `table` and `value` output.
    pub fn text(&self) -> String {
        self.display.clone().unwrap_or_else(|| human(&self.value))
    }
}

/// An ordered set of fields: one object to show, or one row of a list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    fields: Vec<Field>,
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record::default()
    }

    /// Appends a field rendered the default way.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.fields.push(Field {
            name: name.into(),
            value: value.into(),
            display: None,
        });
    }

    /// Appends a field with its own human-readable text.
    pub fn push_with_display(
        &mut self,
        name: impl Into<String>,
        value: impl Into<Value>,
        display: impl Into<String>,
    ) {
        self.fields.push(Field {
            name: name.into(),
            value: value.into(),
            display: Some(display.into()),
        });
    }

    /// The field called `name`.
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// All fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The field names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }
}

/// A `-c` column that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown column {column:?}; available columns: {available}")]
pub struct UnknownColumn {
    /// The column asked for.
    pub column: String,
    /// The columns there are, comma separated.
    pub available: String,
}

/// Renders one object (`show` commands). With no `columns`, every field is shown.
pub fn render_one(
    record: &Record,
    format: Format,
    columns: &[String],
) -> Result<String, UnknownColumn> {
    let names: Vec<String> = record.names().map(str::to_string).collect();
    let selected = select(&names, columns, &names)?;
    let fields: Vec<Field> = selected.iter().map(|name| field_of(record, name)).collect();
    Ok(match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = fields
                .iter()
                .map(|f| vec![f.name.clone(), f.text()])
                .collect();
            table(&["Field".to_string(), "Value".to_string()], &rows)
        }
        Format::Value => fields.iter().map(|f| f.text() + "\n").collect(),
        Format::Json => json(&Ordered(&fields)),
        Format::Yaml => yaml(&Ordered(&fields)),
    })
}

/// Renders a list (`list` commands).
///
/// With no `columns`, `table` and `value` show `default_columns` and `json`/`yaml` show
/// every field of each record. `known` lists columns that are valid even when no record
/// has them (so `-c` is checked on an empty list too).
pub fn render_many(
    records: &[Record],
    known: &[&str],
    default_columns: &[&str],
    format: Format,
    columns: &[String],
) -> Result<String, UnknownColumn> {
    let mut available: Vec<String> = known.iter().map(|s| s.to_string()).collect();
    for record in records {
        for name in record.names() {
            if !available.iter().any(|a| a == name) {
                available.push(name.to_string());
            }
        }
    }
    let all_fields = columns.is_empty() && matches!(format, Format::Json | Format::Yaml);
    let defaults: Vec<String> = default_columns.iter().map(|s| s.to_string()).collect();
    let selected = select(&available, columns, &defaults)?;
    let rows: Vec<Vec<Field>> = records
        .iter()
        .map(|record| {
            if all_fields {
                record.fields().to_vec()
            } else {
                selected.iter().map(|name| field_of(record, name)).collect()
            }
        })
        .collect();
    Ok(match format {
        // An empty list prints nothing, as python-openstackclient does by default.
        Format::Table if rows.is_empty() => String::new(),
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| row.iter().map(Field::text).collect())
                .collect();
            table(&selected, &cells)
        }
        Format::Value => rows
            .iter()
            .map(|row| {
                let values: Vec<String> = row.iter().map(Field::text).collect();
                values.join(" ") + "\n"
            })
            .collect(),
        Format::Json => json(&rows.iter().map(|r| Ordered(r)).collect::<Vec<_>>()),
        Format::Yaml => yaml(&rows.iter().map(|r| Ordered(r)).collect::<Vec<_>>()),
    })
}

fn select(
    available: &[String],
    columns: &[String],
    defaults: &[String],
) -> Result<Vec<String>, UnknownColumn> {
    if columns.is_empty() {
        return Ok(defaults.to_vec());
    }
    let mut selected: Vec<String> = Vec::new();
    for column in columns {
        if !available.contains(column) {
            return Err(UnknownColumn {
                column: column.clone(),
                available: available.join(", "),
            });
        }
        if !selected.contains(column) {
            selected.push(column.clone());
        }
    }
    Ok(selected)
}

fn field_of(record: &Record, name: &str) -> Field {
    record.get(name).cloned().unwrap_or_else(|| Field {
        name: name.to_string(),
        value: Value::Null,
        display: None,
    })
}

/// Serializes fields as a map in their order (serde_json's own map would sort them).
struct Ordered<'a>(&'a [Field]);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for field in self.0 {
            map.serialize_entry(&field.name, &field.value)?;
        }
        map.end()
    }
}

fn json<T: Serialize>(value: &T) -> String {
    // Serializing JSON values to a string cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

fn yaml<T: Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}

/// The human-readable text of a value, as python-openstackclient prints it: `None` for
/// null, `True`/`False`, lists joined with `, `, objects as `key='value', ...`.
pub fn human(value: &Value) -> String {
    match value {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let nested = items.iter().any(|i| i.is_object() || i.is_array());
            let parts: Vec<String> = items.iter().map(human).collect();
            parts.join(if nested { "\n" } else { ", " })
        }
        Value::Object(_) => format_dict(value),
    }
}

fn format_dict(value: &Value) -> String {
    let Value::Object(map) = value else {
        return human(value);
    };
    map.iter()
        .map(|(key, value)| match value {
            Value::Object(_) => format!("{key}='{{{}}}'", format_dict(value)),
            Value::String(s) => format!("{key}='{s}'"),
            Value::Null => format!("{key}="),
            other => format!("{key}='{}'", human_compact(other)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn human_compact(value: &Value) -> String {
    match value {
        Value::Array(_) | Value::Object(_) => value.to_string(),
        other => human(other),
    }
}

/// Renders an ASCII table like python-openstackclient (prettytable, left aligned).
/// Cells that span lines are split over several table lines.
pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            for line in cell.lines() {
                widths[i] = widths[i].max(width(line));
            }
        }
    }
    let border: String = {
        let mut b = String::from("+");
        for w in &widths {
            b.push_str(&"-".repeat(w + 2));
            b.push('+');
        }
        b.push('\n');
        b
    };
    let mut out = String::new();
    let write_row = |out: &mut String, cells: &[String]| {
        let lines: Vec<Vec<&str>> = cells
            .iter()
            .map(|c| {
                let lines: Vec<&str> = c.lines().collect();
                if lines.is_empty() {
                    vec![""]
                } else {
                    lines
                }
            })
            .collect();
        let height = lines.iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            out.push('|');
            for (i, w) in widths.iter().enumerate() {
                let text = lines
                    .get(i)
                    .and_then(|l| l.get(line))
                    .copied()
                    .unwrap_or("");
                let pad = w - width(text);
                let _ = write!(out, " {text}{} |", " ".repeat(pad));
            }
            out.push('\n');
        }
    };
    out.push_str(&border);
    write_row(&mut out, headers);
    out.push_str(&border);
    for row in rows {
        write_row(&mut out, row);
    }
    out.push_str(&border);
    out
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// Columns of `container-show`, in the order shown. Fields the server adds later follow,
/// sorted by name.
pub const CONTAINER_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "image",
    "status",
    "status_reason",
    "status_detail",
    "task_state",
    "command",
    "cpu",
    "memory",
    "environment",
    "labels",
    "workdir",
    "ports",
    "published_ports",
    "addresses",
    "restart_policy",
    "interactive",
    "tty",
    "auto_remove",
    "host",
    "project_id",
    "user_id",
    "created_at",
    "updated_at",
    "links",
];

/// Default columns of `container-list`.
pub const CONTAINER_LIST_COLUMNS: &[&str] =
    &["uuid", "name", "image", "status", "task_state", "ports"];

/// A container as a record: the view's fields, with `ports` rendered as the seed shows
/// them (`[127.0.0.1:8080]`; in JSON a list of such strings), `command` as a shell line,
/// and `addresses` as the list of IPs.
pub fn container_record(view: &ContainerView) -> Record {
    let mut map = match serde_json::to_value(view) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let mut record = Record::new();
    let ports = view.port_summary();
    for &name in CONTAINER_FIELDS {
        let Some(value) = map.remove(name) else {
            continue;
        };
        match name {
            "ports" => {
                let display = format!("[{}]", ports.join(", "));
                record.push_with_display(name, ports.clone(), display);
            }
            "command" => {
                let display = crate::shell::join(&view.command);
                record.push_with_display(name, value, display);
            }
            "addresses" => match address_list(&value) {
                Some(display) => record.push_with_display(name, value, display),
                None => record.push(name, value),
            },
            _ => record.push(name, value),
        }
    }
    // Whatever is left is unknown to this client; `map` iterates sorted by name.
    for (name, value) in map {
        record.push(name, value);
    }
    record
}

/// `{"net": [{"addr": "10.0.0.5", ...}]}` → `10.0.0.5`; `None` for other shapes.
fn address_list(value: &Value) -> Option<String> {
    let networks = value.as_object()?;
    let mut addrs = Vec::new();
    for entries in networks.values() {
        for entry in entries.as_array()? {
            addrs.push(entry.get("addr")?.as_str()?.to_string());
        }
    }
    Some(addrs.join(", "))
}

/// The record of `token-issue`: `expires`, `id`, `project_id`, `user_id`, as
/// `openstack token issue` shows them.
pub fn token_record(token: &TokenInfo) -> Record {
    let mut record = Record::new();
    record.push("expires", token.expires_at.clone());
    record.push("id", token.id.clone());
    record.push("project_id", token.project_id.clone());
    record.push("user_id", token.user_id.clone());
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view() -> ContainerView {
        serde_json::from_value(json!({
            "uuid": "6f1c7a4e-2d35-4c8b-9a57-0a1f3c7e9b21",
            "name": "web",
            "image": "nginx",
            "command": ["sh", "-c", "echo hi"],
            "status": "Running",
            "status_reason": null,
            "status_detail": "Up 2 seconds",
            "task_state": null,
            "cpu": 0.5,
            "memory": "256",
            "environment": {"A": "b"},
            "labels": {},
            "workdir": null,
            "ports": [80],
            "published_ports": [{"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80, "protocol": "tcp"}],
            "addresses": {"net-1": [{"addr": "10.0.0.5", "version": 4}]},
            "restart_policy": {"Name": "no", "MaximumRetryCount": "0"},
            "interactive": false,
            "tty": false,
            "auto_remove": false,
            "project_id": "p1",
            "user_id": "u1",
            "created_at": "2025-01-01 00:00:00",
            "updated_at": null,
            "links": [],
            "zz_new_field": "x",
            "disk": 10
        }))
        .unwrap()
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn show_table_has_field_value_borders_and_seed_style_ports() {
        let text = render_one(&container_record(&view()), Format::Table, &[]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], lines[2]);
        assert!(lines[0].starts_with("+-") && lines[0].ends_with("-+"));
        assert!(lines[1].starts_with("| Field "), "{}", lines[1]);
        assert_eq!(lines.last(), lines.first());
        let ports = text.lines().find(|l| l.contains("| ports ")).unwrap();
        assert!(ports.contains("| [127.0.0.1:8080]"), "{ports}");
        assert!(
            text.contains("| command         | sh -c 'echo hi'"),
            "{text}"
        );
        assert!(text.contains("| addresses       | 10.0.0.5"), "{text}");
        assert!(text.contains("| environment     | A='b'"), "{text}");
        assert!(text.contains("| task_state      | None"), "{text}");
        assert!(text.contains("| auto_remove     | False"), "{text}");
    }

    #[test]
    fn show_fields_follow_the_fixed_order_then_unknown_fields_sorted() {
        let record = container_record(&view());
        let names: Vec<&str> = record.names().collect();
        assert_eq!(&names[..4], ["uuid", "name", "image", "status"]);
        assert_eq!(&names[names.len() - 3..], ["links", "disk", "zz_new_field"]);
        assert!(!names.contains(&"host"), "host is absent for non-admins");
    }

    #[test]
    fn show_value_prints_selected_values_one_per_line_in_the_order_asked() {
        let text = render_one(
            &container_record(&view()),
            Format::Value,
            &cols(&["status", "ports", "name"]),
        )
        .unwrap();
        assert_eq!(text, "Running\n[127.0.0.1:8080]\nweb\n");
    }

    #[test]
    fn show_json_keeps_raw_values_in_field_order_with_rendered_ports() {
        let text = render_one(&container_record(&view()), Format::Json, &[]).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["ports"], json!(["127.0.0.1:8080"]));
        assert_eq!(parsed["command"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(parsed["cpu"], json!(0.5));
        assert_eq!(parsed["published_ports"][0]["host_port"], json!(8080));
        assert_eq!(parsed["disk"], json!(10));
        assert!(text.find("\"uuid\"").unwrap() < text.find("\"name\"").unwrap());
    }

    #[test]
    fn show_yaml_with_columns_contains_only_those() {
        let text = render_one(
            &container_record(&view()),
            Format::Yaml,
            &cols(&["name", "status"]),
        )
        .unwrap();
        assert_eq!(text, "name: web\nstatus: Running\n");
    }

    #[test]
    fn unknown_column_is_an_error_listing_the_columns() {
        let err =
            render_one(&container_record(&view()), Format::Table, &cols(&["nope"])).unwrap_err();
        assert_eq!(err.column, "nope");
        assert!(err.available.starts_with("uuid, name, image"));
        let err = render_many(
            &[],
            CONTAINER_FIELDS,
            CONTAINER_LIST_COLUMNS,
            Format::Value,
            &cols(&["nope"]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("available columns: uuid"));
    }

    #[test]
    fn list_table_shows_the_default_columns() {
        let records = vec![container_record(&view())];
        let text = render_many(
            &records,
            CONTAINER_FIELDS,
            CONTAINER_LIST_COLUMNS,
            Format::Table,
            &[],
        )
        .unwrap();
        let header = text.lines().nth(1).unwrap();
        let names: Vec<&str> = header
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(names, CONTAINER_LIST_COLUMNS);
        let row = text.lines().nth(3).unwrap();
        assert!(
            row.contains("| web  | nginx | Running | None       | [127.0.0.1:8080] |"),
            "{row}"
        );
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn list_value_prints_space_separated_rows_and_accepts_any_view_field() {
        let records = vec![container_record(&view()), container_record(&view())];
        let text = render_many(
            &records,
            CONTAINER_FIELDS,
            CONTAINER_LIST_COLUMNS,
            Format::Value,
            &cols(&["name", "status_detail", "disk"]),
        )
        .unwrap();
        assert_eq!(text, "web Up 2 seconds 10\nweb Up 2 seconds 10\n");
    }

    #[test]
    fn list_json_without_columns_keeps_whole_views_and_with_columns_only_those() {
        let records = vec![container_record(&view())];
        let all = render_many(
            &records,
            CONTAINER_FIELDS,
            CONTAINER_LIST_COLUMNS,
            Format::Json,
            &[],
        )
        .unwrap();
        let all: serde_json::Value = serde_json::from_str(&all).unwrap();
        assert_eq!(all[0]["status_detail"], json!("Up 2 seconds"));
        assert_eq!(all[0]["ports"], json!(["127.0.0.1:8080"]));
        let some = render_many(
            &records,
            CONTAINER_FIELDS,
            CONTAINER_LIST_COLUMNS,
            Format::Json,
            &cols(&["uuid", "status"]),
        )
        .unwrap();
        let some: serde_json::Value = serde_json::from_str(&some).unwrap();
        assert_eq!(
            some,
            json!([{"uuid": "6f1c7a4e-2d35-4c8b-9a57-0a1f3c7e9b21", "status": "Running"}])
        );
    }

    #[test]
    fn empty_list_prints_nothing_as_a_table_and_an_empty_list_as_json_or_yaml() {
        let render = |format| {
            render_many(&[], CONTAINER_FIELDS, CONTAINER_LIST_COLUMNS, format, &[]).unwrap()
        };
        assert_eq!(render(Format::Table), "");
        assert_eq!(render(Format::Value), "");
        assert_eq!(render(Format::Json), "[]\n");
        assert_eq!(render(Format::Yaml), "[]\n");
    }

    #[test]
    fn table_cells_spanning_lines_are_split_and_padded() {
        let text = table(
            &cols(&["a", "b"]),
            &[
                vec!["x\nlonger".into(), "y".into()],
                vec![String::new(), "z".into()],
            ],
        );
        assert_eq!(
            text,
            "+--------+---+\n\
             | a      | b |\n\
             +--------+---+\n\
             | x      | y |\n\
             | longer |   |\n\
             |        | z |\n\
             +--------+---+\n"
        );
    }

    #[test]
    fn human_rendering_matches_openstackclient_conventions() {
        assert_eq!(human(&json!(null)), "None");
        assert_eq!(human(&json!(true)), "True");
        assert_eq!(human(&json!(1.0)), "1.0");
        assert_eq!(human(&json!(["a", 1])), "a, 1");
        assert_eq!(human(&json!({})), "");
        assert_eq!(
            human(&json!({"Name": "on-failure", "MaximumRetryCount": "3"})),
            "MaximumRetryCount='3', Name='on-failure'"
        );
        assert_eq!(human(&json!({"a": {"b": 1}})), "a='{b='1'}'");
    }

    #[test]
    fn token_record_has_the_openstack_token_issue_fields() {
        let token = TokenInfo {
            id: "gAAAA".into(),
            expires_at: Some("2030-01-01T00:00:00Z".into()),
            project_id: Some("p1".into()),
            user_id: Some("u1".into()),
            ..TokenInfo::default()
        };
        let text = render_one(&token_record(&token), Format::Value, &[]).unwrap();
        assert_eq!(text, "2030-01-01T00:00:00Z\ngAAAA\np1\nu1\n");
        let record = token_record(&token);
        let names: Vec<&str> = record.names().collect();
        assert_eq!(names, ["expires", "id", "project_id", "user_id"]);
    }
}
