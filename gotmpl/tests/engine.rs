//! Engine behaviour the helm oracle cannot show: strict mode, delimiters, the clock, random
//! functions (checked by shape), template redefinition, `reads_field`, and errors.

use std::collections::BTreeMap;

use flotilla_gotmpl::{Clock, Error, HelmContext, MissingKey, Options, TemplateSet, Value};

fn render_with(options: Options, text: &str, data: &Value) -> Result<String, Error> {
    let mut set = TemplateSet::new(options);
    set.parse("t", text)?;
    set.execute("t", data)
}

fn values() -> Value {
    Value::from_yaml_values("name: demo\nmap:\n  a: 1\n").unwrap_or_default()
}

fn render(text: &str) -> Result<String, Error> {
    render_with(Options::default(), text, &values())
}

#[test]
fn strict_mode_fails_on_a_missing_key() {
    let strict = Options {
        missing_key: MissingKey::Error,
        ..Options::default()
    };
    let err = render_with(strict, "{{ .nope }}", &values())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(r#"template: t:1:3: executing "t" at <.nope>: map has no entry for key "nope""#)
    );
    assert_eq!(
        render("[{{ .nope }}]").ok().as_deref(),
        Some("[<no value>]")
    );
}

#[test]
fn fleet_delimiters_template_values() {
    let fleet = Options {
        delimiters: ("${".to_string(), "}".to_string()),
        ..Options::default()
    };
    let data = Value::from_yaml_values("ClusterLabels:\n  env: prod\nClusterName: c1\n")
        .unwrap_or_default();
    let out = render_with(
        fleet,
        "${ .ClusterLabels.env | upper }-${ .ClusterName } {{ x }}",
        &data,
    );
    assert_eq!(out.ok().as_deref(), Some("PROD-c1 {{ x }}"));
}

#[test]
fn now_reads_the_configured_clock() {
    let t = time::OffsetDateTime::from_unix_timestamp(1_700_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fixed = Options {
        helm: HelmContext {
            clock: Clock::Fixed(t),
        },
        ..Options::default()
    };
    let out = render_with(
        fixed,
        r#"{{ now | date "2006-01-02T15:04:05Z07:00" }} {{ now | unixEpoch }} {{ now | dateModify "-1h" | date "15:04" }} {{ ago now }}"#,
        &Value::Nil,
    );
    assert_eq!(
        out.ok().as_deref(),
        Some("2023-11-14T22:13:20Z 1700000000 21:13 0s")
    );
}

#[test]
fn dates_from_strings_and_unix_seconds() {
    let out = render(
        r#"{{ toDate "2006-01-02" "2024-02-29" | date "Jan 2, 2006" }} {{ date "2006" 0 }} {{ htmlDate 86400 }}"#,
    );
    assert_eq!(out.ok().as_deref(), Some("Feb 29, 2024 1970 1970-01-02"));
    let out = render(r#"{{ duration 90 }} {{ duration "3700" }} {{ durationRound "2h10m" }}"#);
    assert_eq!(out.ok().as_deref(), Some("1m30s 1h1m40s 2h"));
}

#[test]
fn random_functions_have_the_right_shape() {
    // Newline separates the parts: randAscii may print any other ASCII character.
    let out = render("{{ randAlphaNum 12 }}\n{{ randAlpha 5 }}\n{{ randNumeric 4 }}\n{{ randAscii 3 }}\n{{ uuidv4 }}")
        .unwrap_or_else(|e| panic!("{e}"));
    let parts: Vec<&str> = out.split('\n').collect();
    assert_eq!(parts.len(), 5);
    assert!(parts[0].len() == 12 && parts[0].chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(parts[1].len() == 5 && parts[1].chars().all(|c| c.is_ascii_alphabetic()));
    assert!(parts[2].len() == 4 && parts[2].chars().all(|c| c.is_ascii_digit()));
    assert_eq!(parts[3].len(), 3);
    let u: Vec<&str> = parts[4].split('-').collect();
    assert_eq!(
        u.iter().map(|p| p.len()).collect::<Vec<_>>(),
        vec![8, 4, 4, 4, 12]
    );
    assert!(u[2].starts_with('4'));
    assert_ne!(render("{{ uuidv4 }}").ok(), render("{{ uuidv4 }}").ok());
}

#[test]
fn a_later_definition_replaces_an_earlier_one_unless_empty() {
    let mut set = TemplateSet::new(Options::default());
    let ok = |r: Result<(), Error>| r.unwrap_or_else(|e| panic!("{e}"));
    ok(set.parse("a", r#"{{ define "x" }}first{{ end }}"#));
    ok(set.parse("b", r#"{{ define "x" }}second{{ end }}"#));
    ok(set.parse("c", r#"{{ define "x" }}  {{ end }}"#));
    ok(set.parse("main", r#"{{ include "x" . }}"#));
    assert_eq!(
        set.execute("main", &Value::Nil).ok().as_deref(),
        Some("second")
    );
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        vec!["a", "b", "c", "main", "x"]
    );
}

#[test]
fn reads_field_finds_capabilities_wherever_they_are_read() {
    let reads = |text: &str| {
        let mut set = TemplateSet::new(Options::default());
        set.parse("t", text).unwrap_or_else(|e| panic!("{e}"));
        set.reads_field("Capabilities")
    };
    assert!(reads("{{ .Capabilities.KubeVersion.Version }}"));
    assert!(reads("{{ $.Capabilities.APIVersions.Has \"x\" }}"));
    assert!(reads(
        "{{ with $root := . }}{{ $root.Capabilities }}{{ end }}"
    ));
    assert!(reads("{{ index $ \"Capabilities\" }}"));
    assert!(reads(
        "{{ if true }}{{ range .x }}{{ (.y).Capabilities }}{{ end }}{{ end }}"
    ));
    assert!(
        reads("{{ tpl .Values.t . }}"),
        "tpl text is unknown until run time"
    );
    assert!(!reads("{{ .Values.Capability }}{{ .Release.Name }}"));
}

#[test]
fn objects_carry_helm_methods() {
    let mut files = BTreeMap::new();
    files.insert("conf/a.ini".to_string(), b"k=v\n".to_vec());
    let data = Value::map(
        [
            (
                "Files".to_string(),
                flotilla_gotmpl::Files::new(files).into_value(),
            ),
            (
                "Caps".to_string(),
                flotilla_gotmpl::KubeVersion {
                    version: "v1.31.2".into(),
                    major: "1".into(),
                    minor: "31".into(),
                }
                .into_value(),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let out = render_with(
        Options::default(),
        r#"{{ .Files.Get "conf/a.ini" | trim }} {{ len (.Files.Glob "conf/*") }} {{ .Caps }} {{ .Caps.Minor }} {{ semverCompare ">=1.30" .Caps.Version }}"#,
        &data,
    );
    assert_eq!(out.ok().as_deref(), Some("k=v 1 v1.31.2 31 true"));
    let err = render_with(Options::default(), "{{ .Caps.Nope }}", &data)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            r#"template: t:1:8: executing "t" at <.Caps.Nope>: can't evaluate field Nope in type chartutil.KubeVersion"#
        )
    );
}

#[test]
fn fail_reports_the_outermost_call_site_as_helm_does() {
    let mut set = TemplateSet::new(Options::default());
    set.parse(
        "x/templates/_h.tpl",
        "{{ define \"h\" }}\n  {{ fail \"boom\" }}{{ end }}",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    set.parse("x/templates/a.yaml", "a: 1\nb: {{ include \"h\" . }}")
        .unwrap_or_else(|e| panic!("{e}"));
    let err = set.execute("x/templates/a.yaml", &Value::Nil).err();
    assert_eq!(
        err.map(|e| e.helm_message()).as_deref(),
        Some("execution error at (x/templates/a.yaml:2:6): boom")
    );
}

#[test]
fn parse_errors_read_as_helm_prints_them() {
    let mut set = TemplateSet::new(Options::default());
    let err = set.parse("x/templates/a.yaml", "ok\n{{ if }}").err();
    assert_eq!(
        err.as_ref().map(ToString::to_string).as_deref(),
        Some("template: x/templates/a.yaml:2: missing value for if")
    );
    assert_eq!(
        err.map(|e| e.helm_message()).as_deref(),
        Some("parse error at (x/templates/a.yaml:2): missing value for if")
    );
}

#[test]
fn unsupported_key_types_say_so_by_name() {
    let err = |t: &str| render(t).err().map(|e| e.to_string()).unwrap_or_default();
    let e = err(r#"{{ genPrivateKey "rsa" }}"#);
    assert!(e.contains(r#"only "ecdsa" and "ed25519""#), "{e}");
}

#[test]
fn values_read_as_helm_reads_them() {
    let v = Value::from_yaml_values("num: 3\nmode: 0644\nempty:\nn: x\n").unwrap_or_default();
    let out = render_with(
        Options::default(),
        "{{ .num }} {{ typeOf .num }} {{ .mode }} [{{ .empty }}] {{ index . \"false\" }}",
        &v,
    );
    assert_eq!(out.ok().as_deref(), Some("3 float64 420 [<no value>] x"));
    assert_eq!(
        Value::from_yaml_values("")
            .ok()
            .map(|v| v.to_string())
            .as_deref(),
        Some("map[]")
    );
}

#[test]
fn generated_certificates_are_signed_by_the_generated_ca() {
    let out = render(
        r#"{{ $ca := genCA "demo-ca" 365 }}{{ $c := genSignedCert "svc" (list "10.0.0.1") (list "svc.ns.svc") 30 $ca }}{{ $ca.Cert }}|{{ $c.Cert }}|{{ $c.Key }}|{{ (genSelfSignedCert "self" nil nil 1).Cert | len | lt 100 }}|{{ genPrivateKey "ecdsa" }}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let parts: Vec<&str> = out.split('|').collect();
    assert_eq!(parts.len(), 5);
    let der = |pem: &str| {
        let (_, p) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("pem: {e}"));
        p.contents
    };
    let ca_der = der(parts[0]);
    let leaf_der = der(parts[1]);
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap_or_else(|e| panic!("{e}"));
    let (_, leaf) =
        x509_parser::parse_x509_certificate(&leaf_der).unwrap_or_else(|e| panic!("{e}"));
    assert!(ca.is_ca());
    assert_eq!(leaf.issuer(), ca.subject());
    assert!(leaf.verify_signature(Some(ca.public_key())).is_ok());
    let san = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| format!("{:?}", s.value.general_names))
        .unwrap_or_default();
    assert!(
        san.contains("svc.ns.svc") && san.contains("10.0.0.1") || san.contains("[10, 0, 0, 1]"),
        "{san}"
    );
    assert!(parts[2].starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(parts[3], "true");
    assert!(parts[4].starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn sets_and_values_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<TemplateSet>();
    shared::<Value>();
    shared::<Error>();
}

#[test]
fn set_changes_the_data_the_caller_passed_in_as_go_maps_do() {
    // Helm hands every template of a render the same maps, so a `set` in one template is
    // seen by the next; a caller rendering twice must build the data twice.
    let data = values();
    let mut set = TemplateSet::new(Options::default());
    set.parse("a", r#"{{ $_ := set .map "b" 2 }}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    set.parse("b", "{{ .map }}")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.execute("b", &data).ok().as_deref(), Some("map[a:1]"));
    assert_eq!(set.execute("a", &data).ok().as_deref(), Some(""));
    assert_eq!(
        set.execute("b", &data).ok().as_deref(),
        Some("map[a:1 b:2]")
    );
}

#[test]
fn bcrypt_and_htpasswd_make_hashes_a_bcrypt_verifier_accepts() {
    let out = render("{{ bcrypt \"s3cret\" }}\n{{ htpasswd \"admin\" \"pa:ss wörd\" }}")
        .expect("renders");
    let (hash, line) = out.split_once('\n').expect("two lines");
    assert!(
        hash.starts_with("$2a$10$"),
        "Go's bcrypt version and default cost: {hash}"
    );
    assert!(bcrypt::verify("s3cret", hash).expect("a bcrypt hash"));
    assert!(!bcrypt::verify("s3cret!", hash).expect("a bcrypt hash"));
    let (user, hash) = line.split_once(':').expect("user:hash");
    assert_eq!(user, "admin");
    assert!(bcrypt::verify("pa:ss wörd", hash).expect("a bcrypt hash"));
    // Salted: two calls differ.
    assert_ne!(
        render("{{ bcrypt \"x\" }}").ok(),
        render("{{ bcrypt \"x\" }}").ok()
    );
}
