//! The roster's rules: who an operator is (group, skills with levels, channel capacities) is
//! decided by the roster, never by the desk. A desk's Login (or an admin's `UpdateOperator`) may
//! only *narrow* what the roster grants for the shift: a subset of the skills at the same or
//! lower levels, the same or lower channel capacities, and never another group.
//!
//! Pure: the server keeps the roster (configuration, CSV file, ledger) and asks [`bind`] whether
//! a request fits an entry. Skills and channels have one text form, shared by the roster file's
//! columns and the ledger: `pensions:7;naspi:5` and `voice:1;chat:3` ([`parse_skills`],
//! [`parse_channels`], [`skills_text`], [`channels_text`]).

use crate::model::{Channel, Skill};

/// What the roster grants one operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entitlement {
    /// The operator group (and so supplier and budget).
    pub group: String,
    /// Skills with their highest levels, sorted by name, each once.
    pub skills: Vec<Skill>,
    /// Channel capacities, at most one per channel (empty: one voice contact).
    pub channels: Vec<(Channel, u8)>,
}

/// Why a request does not fit the roster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request names another group than the roster's.
    #[error("the roster puts operator `{operator}` in group `{rostered}`, not `{}`", crate::error::clip(.stated))]
    OtherGroup {
        /// The operator.
        operator: String,
        /// The group the request named.
        stated: String,
        /// The roster's.
        rostered: String,
    },
    /// A skill the roster does not grant.
    #[error("the roster does not give operator `{operator}` the skill `{}`", crate::error::clip(.skill))]
    SkillNotRostered {
        /// The operator.
        operator: String,
        /// The skill.
        skill: String,
    },
    /// A skill above the roster's level.
    #[error("the roster gives operator `{operator}` `{skill}` at level {rostered}, not {asked}")]
    SkillAbove {
        /// The operator.
        operator: String,
        /// The skill.
        skill: String,
        /// Level asked.
        asked: u8,
        /// The roster's level.
        rostered: u8,
    },
    /// A channel capacity above the roster's (0: a channel the roster does not grant).
    #[error("the roster gives operator `{operator}` {rostered} {} contact(s) at once, not {asked}", .channel.as_str())]
    ChannelAbove {
        /// The operator.
        operator: String,
        /// The channel.
        channel: Channel,
        /// Capacity asked.
        asked: u8,
        /// The roster's (0: none).
        rostered: u8,
    },
}

/// What a request states about an operator for the shift.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stated<'a> {
    /// The operator.
    pub operator: &'a str,
    /// The group named (empty: none named).
    pub group: &'a str,
    /// Skills asked (empty: the roster's).
    pub skills: &'a [Skill],
    /// Channel capacities asked (empty: the roster's).
    pub channels: &'a [(Channel, u8)],
}

/// The capacities of `channels` by channel index (empty: one voice contact).
#[must_use]
pub fn capacities(channels: &[(Channel, u8)]) -> [u8; 4] {
    let mut caps = [0u8; 4];
    if channels.is_empty() {
        caps[Channel::Voice.index()] = 1;
    }
    for (c, n) in channels {
        caps[c.index()] = caps[c.index()].max(*n);
    }
    caps
}

/// Binds a request to the roster's entry: the group is always the roster's (a request naming
/// another is refused; one naming none gets it), skills and channels must narrow the roster's
/// (empty: the roster's whole). Returns the group, skills and channels to log in with. Malformed
/// values (a level 0, a duplicate) are left for the engine to refuse with its own errors.
pub fn bind(e: &Entitlement, s: &Stated<'_>) -> Result<Entitlement, Refusal> {
    if !s.group.is_empty() && s.group != e.group {
        return Err(Refusal::OtherGroup {
            operator: s.operator.to_owned(),
            stated: s.group.to_owned(),
            rostered: e.group.clone(),
        });
    }
    for k in s.skills {
        match e.skills.iter().find(|r| r.name == k.name) {
            None => return Err(Refusal::SkillNotRostered { operator: s.operator.to_owned(), skill: k.name.clone() }),
            Some(r) if k.level > r.level => {
                return Err(Refusal::SkillAbove {
                    operator: s.operator.to_owned(),
                    skill: k.name.clone(),
                    asked: k.level,
                    rostered: r.level,
                })
            }
            Some(_) => {}
        }
    }
    let allowed = capacities(&e.channels);
    let channels = if s.channels.is_empty() { e.channels.clone() } else { s.channels.to_vec() };
    for (c, n) in &channels {
        if *n > allowed[c.index()] {
            return Err(Refusal::ChannelAbove {
                operator: s.operator.to_owned(),
                channel: *c,
                asked: *n,
                rostered: allowed[c.index()],
            });
        }
    }
    let skills = if s.skills.is_empty() { e.skills.clone() } else { s.skills.to_vec() };
    Ok(Entitlement { group: e.group.clone(), skills, channels })
}

/// Whether `new` grants at least what `old` did, in the same group: a session bound to `old`
/// still fits `new`, so a logged-in operator may keep it.
#[must_use]
pub fn covers(new: &Entitlement, old: &Entitlement) -> bool {
    let stated = Stated { operator: "", group: &old.group, skills: &old.skills, channels: &old.channels };
    bind(new, &stated).is_ok() && (!old.channels.is_empty() || capacities(&new.channels)[Channel::Voice.index()] > 0)
}

/// Skills in their text form, `pensions:7;naspi:5` (empty: none).
#[must_use]
pub fn skills_text(skills: &[Skill]) -> String {
    skills.iter().map(|s| format!("{}:{}", s.name, s.level)).collect::<Vec<_>>().join(";")
}

/// Channel capacities in their text form, `voice:1;chat:3` (empty: none given).
#[must_use]
pub fn channels_text(channels: &[(Channel, u8)]) -> String {
    channels.iter().map(|(c, n)| format!("{}:{n}", c.as_str())).collect::<Vec<_>>().join(";")
}

/// `name:level` pairs separated by `;` (spaces around items ignored; empty: none), checked:
/// valid names, levels 1..=10, each name once, at most [`crate::MAX_SKILLS`]; sorted by name.
pub fn parse_skills(text: &str) -> Result<Vec<Skill>, String> {
    let mut out: Vec<Skill> = Vec::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, level) = item
            .split_once(':')
            .ok_or_else(|| format!("`{}` is not `skill:level` (e.g. `pensions:7`)", crate::error::clip(item)))?;
        let (name, level) = (name.trim(), level.trim());
        if !crate::config::valid_name(name) {
            return Err(format!("`{}` is not a valid skill name", crate::error::clip(name)));
        }
        let level: u8 = level
            .parse()
            .ok()
            .filter(|l| (1..=10).contains(l))
            .ok_or_else(|| format!("level `{}` of `{name}` is not 1..=10", crate::error::clip(level)))?;
        if out.iter().any(|s| s.name == name) {
            return Err(format!("skill `{name}` given twice"));
        }
        out.push(Skill { name: name.to_owned(), level });
    }
    if out.len() > crate::MAX_SKILLS {
        return Err(format!("at most {} skills ({} given)", crate::MAX_SKILLS, out.len()));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `channel:capacity` pairs separated by `;` (empty: none given, which means one voice
/// contact), checked: known channels, capacities 1..= the channel's maximum, each channel once;
/// in channel order.
pub fn parse_channels(text: &str) -> Result<Vec<(Channel, u8)>, String> {
    let mut out: Vec<(Channel, u8)> = Vec::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, n) = item
            .split_once(':')
            .ok_or_else(|| format!("`{}` is not `channel:capacity` (e.g. `chat:3`)", crate::error::clip(item)))?;
        let c = Channel::parse(name.trim()).ok_or_else(|| {
            format!("`{}` is not a channel (voice, video, callback, chat)", crate::error::clip(name.trim()))
        })?;
        let n: u8 = n.trim().parse().ok().filter(|n| (1..=c.max_capacity()).contains(n)).ok_or_else(|| {
            format!("capacity `{}` of {} is not 1..={}", crate::error::clip(n.trim()), c.as_str(), c.max_capacity())
        })?;
        if out.iter().any(|(x, _)| *x == c) {
            return Err(format!("{} given twice", c.as_str()));
        }
        out.push((c, n));
    }
    out.sort_by_key(|(c, _)| c.index());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e() -> Entitlement {
        Entitlement {
            group: "supplier-a".into(),
            skills: parse_skills("pensions:7;naspi:5").expect("skills"),
            channels: parse_channels("voice:1;chat:3").expect("channels"),
        }
    }

    fn sk(t: &str) -> Vec<Skill> {
        parse_skills(t).expect("skills")
    }

    #[test]
    fn the_group_is_the_rosters() {
        let s = Stated { operator: "op-201", group: "internal", skills: &[], channels: &[] };
        assert!(matches!(bind(&e(), &s), Err(Refusal::OtherGroup { .. })));
        let s = Stated { group: "", ..s };
        assert_eq!(bind(&e(), &s), Ok(e()));
    }

    #[test]
    fn a_desk_narrows_but_never_widens() {
        let ok = sk("pensions:4");
        let s = Stated { operator: "op-201", group: "supplier-a", skills: &ok, channels: &[(Channel::Chat, 2)] };
        assert!(bind(&e(), &s).is_ok());
        let wide = sk("pensions:10");
        assert!(matches!(bind(&e(), &Stated { skills: &wide, ..s.clone() }), Err(Refusal::SkillAbove { .. })));
        let new = sk("isee:1");
        assert!(matches!(bind(&e(), &Stated { skills: &new, ..s.clone() }), Err(Refusal::SkillNotRostered { .. })));
        let video = [(Channel::Video, 1)];
        assert!(matches!(bind(&e(), &Stated { channels: &video, ..s.clone() }), Err(Refusal::ChannelAbove { .. })));
        let chat = [(Channel::Chat, 4)];
        assert!(matches!(bind(&e(), &Stated { channels: &chat, ..s }), Err(Refusal::ChannelAbove { .. })));
    }

    #[test]
    fn text_forms_parse_strictly_and_round_trip() {
        assert_eq!(skills_text(&sk(" naspi:5 ; pensions:7 ")), "naspi:5;pensions:7");
        assert_eq!(channels_text(&parse_channels("chat:3;voice:1").expect("ok")), "voice:1;chat:3");
        for bad in ["pensions", "pensions:0", "pensions:11", "a b:3", "x:1;x:2"] {
            assert!(parse_skills(bad).is_err(), "{bad}");
        }
        for bad in ["voice", "voice:2", "fax:1", "chat:9", "chat:1;chat:2"] {
            assert!(parse_channels(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_skills("").expect("empty"), vec![]);
    }
}
