//! Hostile templates stop with a budget error instead of hanging, panicking or exhausting
//! memory; random input never panics.

use flotilla_gotmpl::{Error, Options, TemplateSet, Value};
use proptest::prelude::*;

fn run(options: Options, text: &str) -> Result<String, Error> {
    let mut set = TemplateSet::new(options);
    set.parse("t", text)?;
    set.execute(
        "t",
        &Value::from_yaml_values("a: [1, 2]\ns: x\n").unwrap_or_default(),
    )
}

fn small() -> Options {
    Options {
        max_steps: 100_000,
        max_output_bytes: 1 << 20,
        ..Options::default()
    }
}

fn assert_budget(r: Result<String, Error>) {
    match r {
        Err(Error::Budget { .. }) => {}
        other => panic!("expected a budget error, got {other:?}"),
    }
}

#[test]
fn infinite_include_recursion_stops_at_the_depth_budget() {
    assert_budget(run(
        small(),
        r#"{{ define "loop" }}{{ include "loop" . }}{{ end }}{{ include "loop" . }}"#,
    ));
}

#[test]
fn infinite_template_recursion_stops_at_the_depth_budget() {
    assert_budget(run(
        small(),
        r#"{{ define "loop" }}x{{ template "loop" . }}{{ end }}{{ template "loop" . }}"#,
    ));
}

#[test]
fn infinite_tpl_recursion_stops_at_the_depth_budget() {
    let text = r#"{{ define "t" }}{{ tpl "{{ include \"t\" . }}" . }}{{ end }}{{ include "t" . }}"#;
    assert_budget(run(small(), text));
}

#[test]
fn a_huge_repeat_is_refused_before_it_allocates() {
    assert_budget(run(small(), r#"{{ repeat 1000000000 "xxxxxxxxxx" }}"#));
}

#[test]
fn a_huge_until_is_refused_before_it_allocates() {
    assert_budget(run(small(), "{{ until 1000000000 }}"));
    assert_budget(run(small(), "{{ range until 1000000000 }}{{ end }}"));
}

#[test]
fn a_huge_range_over_an_int_is_refused() {
    assert_budget(run(small(), "{{ range 1000000000 }}{{ end }}"));
}

#[test]
fn doubling_strings_hit_the_output_budget() {
    let text = r#"{{ $s := "xxxxxxxxxxxxxxxx" }}{{ range until 40 }}{{ $s = print $s $s }}{{ end }}{{ $s }}"#;
    assert_budget(run(small(), text));
}

#[test]
fn nested_loops_hit_the_step_budget() {
    let text = "{{ range until 1000 }}{{ range until 1000 }}{{ . }}{{ end }}{{ end }}";
    assert_budget(run(small(), text));
}

#[test]
fn huge_printf_widths_are_refused() {
    assert_budget(run(small(), r#"{{ printf "%999999999d" 1 }}"#));
}

#[test]
fn deeply_nested_parentheses_are_a_parse_error_not_a_stack_overflow() {
    let text = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
    assert!(matches!(run(small(), &text), Err(Error::Parse { .. })));
}

#[test]
fn a_map_that_contains_itself_prints_without_overflowing() {
    let text = r#"{{ $d := dict }}{{ $_ := set $d "self" $d }}{{ $d | toJson }}{{ $d }}{{ toYaml $d | len }}"#;
    // Go itself would crash here; this engine only has to stay up.
    let _ = run(small(), text);
}

#[test]
fn maps_shared_under_many_keys_do_not_print_exponentially() {
    // Each line doubles the printed size: 2^60 nodes if walks were bounded by depth alone.
    let mut text = String::from(r#"{{ $m := dict "leaf" 1 }}"#);
    for _ in 0..60 {
        text.push_str(r#"{{ $m = dict "a" $m "b" $m }}"#);
    }
    for f in [
        "{{ $m | toJson | len }}",
        "{{ $m | toYaml | len }}",
        "{{ $m | len }}",
        "{{ deepEqual $m (deepCopy $m) }}",
        "{{ printf \"%v\" $m | len }}",
        "{{ $m | toString | len }}",
        "{{ merge (dict) $m | len }}",
        "{{ toToml $m | len }}",
    ] {
        // Any outcome but a hang or a crash is fine here; the budgets end each walk.
        let _ = run(small(), &format!("{text}{f}"));
    }
}

#[test]
fn merging_a_map_into_itself_does_not_deadlock() {
    let out = run(
        small(),
        r#"{{ $d := dict "a" 1 }}{{ merge $d $d }}{{ mergeOverwrite $d $d }}"#,
    );
    assert_eq!(out.ok().as_deref(), Some("map[a:1]map[a:1]"));
}

/// Budgets for random input: small, so a generated loop ends quickly.
fn tiny() -> Options {
    Options {
        max_steps: 5_000,
        max_output_bytes: 64 << 10,
        ..Options::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let _ = run(tiny(), &text);
    }

    #[test]
    fn random_actions_never_panic(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("{{".to_string()), Just("}}".to_string()), Just("{{-".to_string()),
                Just("-}}".to_string()), Just(" ".to_string()), Just("|".to_string()),
                Just("(".to_string()), Just(")".to_string()), Just("$x".to_string()),
                Just(":=".to_string()), Just(".a".to_string()), Just(".s".to_string()),
                Just("if".to_string()), Just("range".to_string()), Just("end".to_string()),
                Just("else".to_string()), Just("with".to_string()), Just("define".to_string()),
                Just("\"t\"".to_string()), Just("include".to_string()), Just("tpl".to_string()),
                Just("printf".to_string()), Just("\"%d %s %v\"".to_string()), Just("1".to_string()),
                Just("-1".to_string()), Just("index".to_string()), Just("toYaml".to_string()),
                Just("dict".to_string()), Just("set".to_string()), Just("until".to_string()),
                Just("break".to_string()), Just("template".to_string()), Just("/*".to_string()),
                Just("*/".to_string()), Just("nil".to_string()), Just("default".to_string()),
            ],
            0..40,
        )
    ) {
        let _ = run(tiny(), &parts.concat());
    }
}

#[test]
fn printing_big_values_in_a_loop_hits_the_step_budget() {
    let mut text = String::from(r#"{{ $m := dict "leaf" 1 }}"#);
    for _ in 0..12 {
        text.push_str(r#"{{ $m = dict "a" $m "b" $m }}"#);
    }
    text.push_str("{{ range until 100000 }}{{ $_ := toString $m }}{{ end }}");
    assert_budget(run(small(), &text));
}

#[test]
fn string_functions_on_big_strings_in_a_loop_hit_the_step_budget() {
    let text =
        r#"{{ $s := repeat 500000 "ab" }}{{ range until 100000 }}{{ $_ := upper $s }}{{ end }}"#;
    assert_budget(run(small(), text));
}
