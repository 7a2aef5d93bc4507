//! An allow-list under construction: syscalls allowed always, or only with given arguments.

use std::collections::BTreeMap;

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::SeccompError;

/// Per syscall number: `None` = allowed with any arguments, `Some(rules)` = allowed when one of
/// the rules matches.
#[derive(Debug, Default, Clone)]
pub struct AllowList {
    entries: BTreeMap<i64, Option<Vec<Rule>>>,
}

/// All conditions must hold: (argument index, comparison).
#[derive(Debug, Clone)]
struct Rule(Vec<(u8, Cmp)>);

#[derive(Debug, Clone, Copy)]
enum Cmp {
    /// The 32-bit argument equals the value (ioctl requests, flags, signals).
    Eq32(u64),
    /// The argument ANDed with the mask equals the value.
    Masked { mask: u64, value: u64 },
}

impl AllowList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `syscalls` with any arguments.
    pub fn always(&mut self, syscalls: &[libc::c_long]) -> &mut Self {
        for &nr in syscalls {
            self.entries.insert(nr, None);
        }
        self
    }

    /// Allows `syscall` when its argument `arg` (32 bits) is one of `values`.
    pub fn when_arg_is(&mut self, syscall: libc::c_long, arg: u8, values: &[u64]) -> &mut Self {
        for &value in values {
            self.add_rule(syscall, Rule(vec![(arg, Cmp::Eq32(value))]));
        }
        self
    }

    /// Allows `syscall` when `argument & mask == value`.
    pub fn when_masked(
        &mut self,
        syscall: libc::c_long,
        arg: u8,
        mask: u64,
        value: u64,
    ) -> &mut Self {
        self.add_rule(syscall, Rule(vec![(arg, Cmp::Masked { mask, value })]));
        self
    }

    /// Adds everything `other` allows.
    pub fn extend(&mut self, other: &AllowList) -> &mut Self {
        for (&nr, rules) in &other.entries {
            match rules {
                None => {
                    self.entries.insert(nr, None);
                }
                Some(rules) => {
                    for rule in rules {
                        self.add_rule(nr, rule.clone());
                    }
                }
            }
        }
        self
    }

    fn add_rule(&mut self, syscall: libc::c_long, rule: Rule) {
        match self
            .entries
            .entry(syscall)
            .or_insert_with(|| Some(Vec::new()))
        {
            // Already allowed with any arguments: a narrower rule adds nothing.
            None => {}
            Some(rules) => rules.push(rule),
        }
    }

    /// Whether `syscall` is allowed in some form.
    #[cfg(test)]
    pub fn contains(&self, syscall: libc::c_long) -> bool {
        self.entries.contains_key(&syscall)
    }

    /// The rules in seccompiler's form.
    pub fn to_seccompiler(&self) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
        let mut map = BTreeMap::new();
        for (&nr, rules) in &self.entries {
            let compiled = match rules {
                None => Vec::new(),
                Some(rules) => rules
                    .iter()
                    .map(compile_rule)
                    .collect::<Result<Vec<_>, _>>()?,
            };
            map.insert(nr, compiled);
        }
        Ok(map)
    }
}

fn compile_rule(rule: &Rule) -> Result<SeccompRule, SeccompError> {
    let conditions = rule
        .0
        .iter()
        .map(|&(arg, cmp)| match cmp {
            Cmp::Eq32(value) => {
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            }
            Cmp::Masked { mask, value } => SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(mask),
                value,
            ),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(SeccompError::Rule)?;
    SeccompRule::new(conditions).map_err(SeccompError::Rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconditional_wins_over_conditional_in_either_order() {
        let mut list = AllowList::new();
        list.when_arg_is(libc::SYS_ioctl, 1, &[1, 2]);
        assert_eq!(list.to_seccompiler().unwrap()[&libc::SYS_ioctl].len(), 2);
        list.always(&[libc::SYS_ioctl]);
        assert!(list.to_seccompiler().unwrap()[&libc::SYS_ioctl].is_empty());
        list.when_arg_is(libc::SYS_ioctl, 1, &[3]);
        assert!(list.to_seccompiler().unwrap()[&libc::SYS_ioctl].is_empty());
    }

    #[test]
    fn extend_merges_rules() {
        let mut a = AllowList::new();
        a.when_arg_is(libc::SYS_ioctl, 1, &[1]);
        let mut b = AllowList::new();
        b.when_arg_is(libc::SYS_ioctl, 1, &[2])
            .always(&[libc::SYS_read]);
        a.extend(&b);
        let map = a.to_seccompiler().unwrap();
        assert_eq!(map[&libc::SYS_ioctl].len(), 2);
        assert!(map[&libc::SYS_read].is_empty());
        assert!(!a.contains(libc::SYS_write));
    }
}
