//! The routing decision, pure: which models may serve a task, in which
//! order, and why.
//!
//! Candidates come from the model the client names (then its fallbacks) or
//! from the intent. Each is kept only if its provider exists, is allowed
//! by the policy's allow and deny lists, is not local-only-forbidden (a
//! `local-only` task never reaches a `cloud: true` provider), its tier is
//! allowed by the intent, and its breaker is not open. The survivors are
//! ordered: the intent's default route first when it meets its latency
//! SLO; then (for `hybrid`) local providers before cloud ones, those
//! within their SLO before those past it, the policy's fallback order, and
//! price.

use std::time::Instant;

use serde::Serialize;

use crate::health::{Availability, Health};
use crate::registry::{ModelKind, Privacy, Registry};

/// What a task asks for.
#[derive(Debug, Clone, Default)]
pub struct Ask<'a> {
    /// A model id, an intent as `intent:<id>`, or `auto`/`aion` (the default
    /// intent).
    pub model: Option<&'a str>,
    /// An intent, when the task names one.
    pub intent: Option<&'a str>,
    /// The caller may only tighten privacy.
    pub privacy: Option<Privacy>,
    /// Who asks (`user:<id>`, `team:<id>`), for the policy's local-only subjects.
    pub subjects: &'a [String],
}

/// One model to try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Route {
    pub model: String,
    pub provider: String,
}

/// How the first route was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChosenBy {
    /// The client named the model.
    Client,
    /// The intent's default route.
    DefaultRoute,
    /// The policy's order (the default route did not qualify or was slow).
    Policy,
}

/// A decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub intent: Option<String>,
    pub privacy: Privacy,
    /// In the order they are tried.
    pub routes: Vec<Route>,
    pub chosen_by: ChosenBy,
    /// Why the first route, in words.
    pub reason: String,
    /// Candidates left out, with why.
    pub skipped: Vec<(String, String)>,
    /// The output cap of the intent, if it sets one.
    pub max_output: Option<u32>,
}

/// Why no route could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    #[error("no model or intent {0:?}")]
    UnknownModel(String),
    #[error("no intent {0:?}")]
    UnknownIntent(String),
    #[error("no intent named and no default intent in policies.yml")]
    NoIntent,
    #[error("{0:?} is an embedding model; ask /v1/embeddings")]
    NotChat(String),
    #[error("no candidate may serve this task: {0}")]
    AllSkipped(String),
}

/// Decides for `ask` on `reg`, with the providers' `health` at `now`.
pub fn decide(reg: &Registry, ask: &Ask<'_>, health: &Health, now: Instant) -> Result<Decision, NoRoute> {
    let (intent, explicit): (Option<&crate::registry::Intent>, Option<&str>) = {
        let by_model = ask.model.filter(|m| !m.is_empty());
        match by_model {
            Some(m) if m == "auto" || m == "aion" => (None, None),
            Some(m) if m.starts_with("intent:") => {
                let id = &m["intent:".len()..];
                (Some(reg.intents.get(id).ok_or_else(|| NoRoute::UnknownIntent(id.to_owned()))?), None)
            }
            Some(m) if reg.models.contains_key(m) => (None, Some(m)),
            Some(m) if reg.intents.contains_key(m) => (reg.intents.get(m), None),
            Some(m) => return Err(NoRoute::UnknownModel(m.to_owned())),
            None => (None, None),
        }
    };
    let intent = match (intent, ask.intent, explicit) {
        (Some(i), _, _) => Some(i),
        (None, Some(id), _) => Some(reg.intents.get(id).ok_or_else(|| NoRoute::UnknownIntent(id.to_owned()))?),
        // a model named outright still answers to the default intent's
        // privacy, tiers and modules: naming a model never sidesteps the policy
        (None, None, Some(_)) => reg.policy.default_intent.as_deref().and_then(|id| reg.intents.get(id)),
        (None, None, None) => {
            let id = reg.policy.default_intent.as_deref().ok_or(NoRoute::NoIntent)?;
            Some(reg.intents.get(id).ok_or_else(|| NoRoute::UnknownIntent(id.to_owned()))?)
        }
    };

    let mut privacy = intent.map_or(Privacy::AllowApi, |i| i.privacy);
    let mut why_private = intent.map(|i| format!("intent {}", i.id));
    if let Some(i) = intent {
        if reg.policy.local_only_intents.contains(&i.id) {
            privacy = Privacy::LocalOnly;
            why_private = Some(format!("policy for intent {}", i.id));
        }
    }
    if ask.subjects.iter().any(|s| reg.policy.local_only_subjects.contains(s)) {
        privacy = Privacy::LocalOnly;
        why_private = Some("policy for this subject".into());
    }
    if let Some(p) = ask.privacy {
        if p < privacy {
            privacy = p;
            why_private = Some("the request".into());
        }
    }

    let names: Vec<&str> = match explicit {
        Some(m) => {
            let model = &reg.models[m];
            if model.kind != ModelKind::Chat {
                return Err(NoRoute::NotChat(m.to_owned()));
            }
            std::iter::once(m).chain(model.fallbacks.iter().map(String::as_str)).collect()
        }
        None => intent.map(|i| i.candidates.iter().map(String::as_str).collect()).unwrap_or_default(),
    };

    struct Kept<'r> {
        route: Route,
        cloud: bool,
        slow: bool,
        order: usize,
        price: f64,
        index: usize,
        p95: Option<u32>,
        slo: Option<u64>,
        _model: &'r crate::registry::Model,
    }
    let mut kept: Vec<Kept<'_>> = Vec::new();
    let mut skipped = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if kept.iter().any(|k| k.route.model == *name) {
            continue;
        }
        let Some(model) = reg.models.get(*name) else {
            skipped.push(((*name).to_owned(), "not in models.yml".to_owned()));
            continue;
        };
        let Some(provider) = reg.providers.get(&model.provider) else {
            skipped.push((model.id.clone(), format!("provider {} is not declared", model.provider)));
            continue;
        };
        if model.kind != ModelKind::Chat {
            skipped.push((model.id.clone(), "an embedding model".into()));
            continue;
        }
        if privacy == Privacy::LocalOnly && provider.cloud {
            let why = why_private.clone().unwrap_or_default();
            skipped.push((model.id.clone(), format!("local-only ({why}) and {} is a cloud provider", provider.id)));
            continue;
        }
        if let Some(i) = intent {
            if !i.tiers.is_empty() && !i.tiers.contains(&model.tier) {
                skipped.push((model.id.clone(), format!("tier {} not allowed by intent {}", model.tier, i.id)));
                continue;
            }
        }
        if reg.policy.deny_providers.contains(&provider.id) {
            skipped.push((model.id.clone(), format!("provider {} is denied by the policy", provider.id)));
            continue;
        }
        if !reg.policy.allow_providers.is_empty() && !reg.policy.allow_providers.contains(&provider.id) {
            skipped.push((model.id.clone(), format!("provider {} is not in the policy's allow list", provider.id)));
            continue;
        }
        match health.availability(&provider.id, now) {
            Availability::Open => {
                skipped.push((model.id.clone(), format!("circuit open for {}", provider.id)));
                continue;
            }
            Availability::Backoff => {
                skipped.push((model.id.clone(), format!("{} asked to retry later", provider.id)));
                continue;
            }
            Availability::Closed | Availability::HalfOpen => {}
        }
        let p95 = health.p95_ms(&provider.id);
        let slo = reg.slo_ms(model);
        let slow = matches!((p95, slo), (Some(p), Some(s)) if u64::from(p) > s);
        let order = reg.policy.fallback_order.iter().position(|p| *p == provider.id).unwrap_or(usize::MAX);
        kept.push(Kept {
            route: Route { model: model.id.clone(), provider: provider.id.clone() },
            cloud: provider.cloud,
            slow,
            order,
            price: model.price.input + model.price.output,
            index,
            p95,
            slo,
            _model: model,
        });
    }
    if kept.is_empty() {
        let why = if skipped.is_empty() {
            "the intent has no candidates".to_owned()
        } else {
            skipped.iter().map(|(m, w)| format!("{m}: {w}")).collect::<Vec<_>>().join("; ")
        };
        return Err(NoRoute::AllSkipped(why));
    }

    let default = match explicit {
        Some(m) => Some(m),
        None => intent.map(|i| i.default_route.as_str()).filter(|d| !d.is_empty()),
    };
    let pinned = explicit.is_some();
    let first_default = default.and_then(|d| kept.iter().position(|k| k.route.model == d && (pinned || !k.slow)));
    let mut ordered: Vec<Kept<'_>> = Vec::with_capacity(kept.len());
    if let Some(i) = first_default {
        ordered.push(kept.remove(i));
    }
    if pinned {
        // the client's model, then its fallbacks as written
        kept.sort_by_key(|k| k.index);
    } else {
        kept.sort_by(|a, b| {
            let local_first = privacy == Privacy::Hybrid;
            (local_first && a.cloud, a.slow, a.order, a.index)
                .cmp(&(local_first && b.cloud, b.slow, b.order, b.index))
                .then(a.price.total_cmp(&b.price))
        });
    }
    ordered.extend(kept);

    let first = &ordered[0];
    let latency = match (first.p95, first.slo) {
        (Some(p), Some(s)) if u64::from(p) <= s => format!("p95 {p} ms within its {s} ms SLO"),
        (Some(p), Some(s)) => format!("p95 {p} ms past its {s} ms SLO, the fastest left"),
        (None, Some(s)) => format!("no latency yet against its {s} ms SLO"),
        (Some(p), None) => format!("p95 {p} ms"),
        (None, None) => "no latency yet".to_owned(),
    };
    let (chosen_by, mut reason) = if pinned && first.route.model == explicit.unwrap_or_default() {
        (ChosenBy::Client, format!("{} as asked ({latency})", first.route.model))
    } else if !pinned && default == Some(first.route.model.as_str()) {
        (ChosenBy::DefaultRoute, format!("default route {} of intent {} ({latency})", first.route.model, intent.map_or("", |i| i.id.as_str())))
    } else {
        let mut r = format!("{} on {} by the policy's order ({latency})", first.route.model, first.route.provider);
        if let Some(d) = default {
            if let Some((_, why)) = skipped.iter().find(|(m, _)| m == d) {
                r = format!("{r}; {d} skipped: {why}");
            } else if ordered.iter().any(|k| k.route.model == d && k.slow) {
                r = format!("{r}; {d} is past its latency SLO");
            }
        }
        (ChosenBy::Policy, r)
    };
    if privacy == Privacy::LocalOnly {
        reason.push_str("; local-only");
    }
    Ok(Decision {
        intent: intent.map(|i| i.id.clone()),
        privacy,
        routes: ordered.into_iter().map(|k| k.route).collect(),
        chosen_by,
        reason,
        skipped,
        max_output: intent.and_then(|i| i.max_output),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::registry::Breaker;

    const MODELS: &str = "providers:\n  local:\n    kind: openai\n    url: http://127.0.0.1:1/v1\n    cloud: false\n  cloud-a:\n    kind: openai\n    url: http://127.0.0.1:2/v1\n    cloud: true\n  cloud-b:\n    kind: anthropic\n    url: http://127.0.0.1:3\n    cloud: true\nmodels:\n  tiny:\n    provider: local\n    tier: local\n    price: {input: 0, output: 0}\n  mid:\n    provider: cloud-a\n    tier: small\n    price: {input: 0.15, output: 0.6}\n    fallbacks: [big]\n  big:\n    provider: cloud-b\n    tier: large\n    price: {input: 3, output: 15}\n";
    const INTENTS: &str = "intents:\n  chat:\n    default_route: mid\n    candidates: [big, tiny]\n    privacy: hybrid\n  secret:\n    default_route: mid\n    candidates: [tiny, big]\n    privacy: local-only\n  cheap:\n    candidates: [mid]\n    privacy: allow-api\n    tiers: [small]\n";

    fn reg(policies: &str) -> Registry {
        Registry::parse([Some(MODELS), Some(INTENTS), Some(policies), None]).expect("valid").0
    }

    fn models(d: &Decision) -> Vec<&str> {
        d.routes.iter().map(|r| r.model.as_str()).collect()
    }

    #[test]
    fn the_default_route_goes_first_then_local_before_cloud_for_hybrid() {
        let r = reg("default_intent: chat\n");
        let d = decide(&r, &Ask::default(), &Health::default(), Instant::now()).expect("route");
        assert_eq!(models(&d), ["mid", "tiny", "big"]);
        assert_eq!(d.chosen_by, ChosenBy::DefaultRoute);
        assert!(d.reason.starts_with("default route mid of intent chat"), "{}", d.reason);
    }

    #[test]
    fn naming_a_model_still_answers_to_the_default_intents_policy() {
        let h = Health::default();
        // the default intent is local-only: a cloud model named outright is refused
        let r = reg("default_intent: secret\n");
        let e = decide(&r, &Ask { model: Some("big"), ..Ask::default() }, &h, Instant::now()).expect_err("refused");
        assert!(matches!(e, NoRoute::AllSkipped(ref w) if w.contains("local-only")), "{e}");
        let d = decide(&r, &Ask { model: Some("tiny"), ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!((models(&d), d.intent.as_deref()), (vec!["tiny"], Some("secret")), "its modules run too");
        // and its tiers
        let r = reg("default_intent: cheap\n");
        assert!(decide(&r, &Ask { model: Some("big"), ..Ask::default() }, &h, Instant::now()).is_err());
        // with no default intent, a named model is served as named
        let d = decide(&reg(""), &Ask { model: Some("big"), ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!((models(&d), d.intent.as_deref()), (vec!["big"], None));
    }

    #[test]
    fn local_only_never_keeps_a_cloud_candidate_whoever_asks() {
        let r = reg("privacy: {local_only_subjects: [\"team:t1\"]}\n");
        let h = Health::default();
        let d = decide(&r, &Ask { model: Some("intent:secret"), ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!(models(&d), ["tiny"]);
        assert_eq!(d.privacy, Privacy::LocalOnly);
        assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
        let subjects = ["user:u".to_owned(), "team:t1".to_owned()];
        let d = decide(&r, &Ask { model: Some("chat"), subjects: &subjects, ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!(models(&d), ["tiny"]);
        // a client naming a cloud model from a local-only team is refused
        let e = decide(&r, &Ask { model: Some("big"), subjects: &subjects, ..Ask::default() }, &h, Instant::now()).expect_err("refused");
        assert!(matches!(e, NoRoute::AllSkipped(ref w) if w.contains("local-only")), "{e}");
        // and the request can only tighten
        let d = decide(&r, &Ask { model: Some("chat"), privacy: Some(Privacy::LocalOnly), ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!(models(&d), ["tiny"]);
    }

    #[test]
    fn tiers_deny_lists_and_open_breakers_leave_candidates_out_with_reasons() {
        let r = reg("providers: {deny: [cloud-b]}\n");
        let h = Health::default();
        let d = decide(&r, &Ask { model: Some("cheap"), ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!(models(&d), ["mid"]);
        let now = Instant::now();
        for _ in 0..5 {
            h.failure("cloud-a", &Breaker { failures: 5, open_ms: 60_000 }, None, now);
        }
        let d = decide(&r, &Ask { model: Some("chat"), ..Ask::default() }, &h, now).expect("route");
        assert_eq!(models(&d), ["tiny"]);
        assert_eq!(d.chosen_by, ChosenBy::Policy);
        assert!(d.reason.contains("mid skipped: circuit open for cloud-a"), "{}", d.reason);
        let e = decide(&r, &Ask { model: Some("cheap"), ..Ask::default() }, &h, now).expect_err("none left");
        assert!(e.to_string().contains("mid: circuit open for cloud-a"), "{e}");
    }

    #[test]
    fn a_slow_default_route_is_demoted_and_the_fallback_order_ranks_the_rest() {
        let r = reg("latency_slo_ms: {small: 100}\nfallback_order: [cloud-b, local]\n");
        let h = Health::default();
        for _ in 0..10 {
            h.success("cloud-a", Duration::from_millis(400));
        }
        let d = decide(&r, &Ask { model: Some("chat"), ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!(models(&d), ["tiny", "big", "mid"], "hybrid: local first, then the order; the slow one last");
        assert!(d.reason.contains("mid is past its latency SLO"), "{}", d.reason);
        let d = decide(&r, &Ask { model: Some("intent:cheap"), ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!(models(&d), ["mid"]);
    }

    #[test]
    fn a_named_model_comes_first_with_its_fallbacks_and_unknown_names_are_errors() {
        let r = reg("");
        let h = Health::default();
        let d = decide(&r, &Ask { model: Some("mid"), ..Ask::default() }, &h, Instant::now()).expect("route");
        assert_eq!(models(&d), ["mid", "big"]);
        assert_eq!(d.chosen_by, ChosenBy::Client);
        assert_eq!(decide(&r, &Ask { model: Some("gpt-9"), ..Ask::default() }, &h, Instant::now()).expect_err("unknown"), NoRoute::UnknownModel("gpt-9".into()));
        assert_eq!(decide(&r, &Ask::default(), &h, Instant::now()).expect_err("no intent"), NoRoute::NoIntent);
    }
}
