//! Renders one template file with a values file, as `helm template` would render it in a
//! chart named `x` (without Helm's chart loading): `.Values`, `.Release.Name`, `.Chart.Name`.
//!
//! `cargo run -p flotilla-gotmpl --example render -- TEMPLATE [VALUES.yaml]`

use std::collections::BTreeMap;

use flotilla_gotmpl::{Options, TemplateSet, Value};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let template = args.next().ok_or("usage: render TEMPLATE [VALUES.yaml]")?;
    let values = match args.next() {
        Some(path) => Value::from_yaml_values(&std::fs::read_to_string(path)?)?,
        None => Value::map(BTreeMap::new()),
    };
    let mut set = TemplateSet::new(Options::default());
    set.parse(&template, &std::fs::read_to_string(&template)?)
        .map_err(|e| e.helm_message())?;
    let named = |pairs: &[(&str, Value)]| {
        Value::map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    let data = named(&[
        ("Values", values),
        (
            "Release",
            named(&[("Name", "x".into()), ("Namespace", "default".into())]),
        ),
        ("Chart", named(&[("Name", "x".into())])),
    ]);
    let out = set
        .execute(&template, &data)
        .map_err(|e| e.helm_message())?;
    // Helm's last step: `<no value>` becomes "".
    Ok(out.replace("<no value>", ""))
}
