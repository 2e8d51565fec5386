//! The roster's narrowing rules against a reference model, for random entries and requests: a
//! login is bound exactly when it names the roster's group (or none) and asks for a subset of
//! the roster's skills at the same or lower levels and the same or lower capacities; what it is
//! bound to always fits the entry again; an entry always covers itself and what it narrows to.

use proptest::prelude::*;
use smista_core::roster::{
    bind, capacities, channels_text, covers, parse_channels, parse_skills, skills_text, Entitlement, Stated,
};
use smista_core::{Channel, Skill};

const SKILLS: [&str; 5] = ["pensions", "naspi", "isee", "family", "de"];
const GROUPS: [&str; 3] = ["internal", "supplier-a", "supplier-b"];

fn skills() -> impl Strategy<Value = Vec<Skill>> {
    proptest::collection::btree_map(0..SKILLS.len(), 1u8..=10, 0..=SKILLS.len()).prop_map(|m| {
        let mut v: Vec<Skill> = m.into_iter().map(|(i, level)| Skill { name: SKILLS[i].into(), level }).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    })
}

fn channels() -> impl Strategy<Value = Vec<(Channel, u8)>> {
    proptest::collection::btree_map(0..4usize, 1u8..=8, 0..=4).prop_map(|m| {
        m.into_iter()
            .map(|(i, n)| {
                let c = Channel::ALL[i];
                (c, n.min(c.max_capacity()))
            })
            .collect()
    })
}

fn entitlement() -> impl Strategy<Value = Entitlement> {
    (0..GROUPS.len(), skills(), channels()).prop_map(|(g, skills, channels)| Entitlement {
        group: GROUPS[g].into(),
        skills,
        channels,
    })
}

/// The rule, written the plain way.
fn fits(e: &Entitlement, group: &str, skills: &[Skill], channels: &[(Channel, u8)]) -> bool {
    let allowed = capacities(&e.channels);
    (group.is_empty() || group == e.group)
        && skills.iter().all(|k| e.skills.iter().any(|r| r.name == k.name && k.level <= r.level))
        && channels.iter().all(|(c, n)| *n <= allowed[c.index()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_login_is_bound_exactly_when_it_narrows_the_roster(
        e in entitlement(),
        g in prop_oneof![Just(String::new()), (0..GROUPS.len()).prop_map(|i| GROUPS[i].to_owned())],
        asked in skills(),
        caps in channels(),
    ) {
        let s = Stated { operator: "op-1", group: &g, skills: &asked, channels: &caps };
        let r = bind(&e, &s);
        prop_assert_eq!(r.is_ok(), fits(&e, &g, &asked, &caps), "{:?} {:?}", e, s);
        if let Ok(Entitlement { group, skills, channels }) = r {
            // Bound to the roster's group, and what it got fits the roster again.
            prop_assert_eq!(&group, &e.group);
            prop_assert!(fits(&e, &group, &skills, &channels));
            if asked.is_empty() { prop_assert_eq!(&skills, &e.skills); }
            if caps.is_empty() { prop_assert_eq!(&channels, &e.channels); }
            // An entry narrowed to what the login got is covered by the entry.
            let narrowed = Entitlement { group, skills, channels };
            prop_assert!(covers(&e, &narrowed) || narrowed.channels.is_empty());
        }
    }

    #[test]
    fn an_entry_covers_itself_and_text_forms_round_trip(e in entitlement(), other in entitlement()) {
        prop_assert!(covers(&e, &e));
        if covers(&other, &e) {
            prop_assert_eq!(&other.group, &e.group);
        }
        prop_assert_eq!(parse_skills(&skills_text(&e.skills)).expect("skills"), e.skills.clone());
        prop_assert_eq!(parse_channels(&channels_text(&e.channels)).expect("channels"), e.channels.clone());
    }
}
