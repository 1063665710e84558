//! `[retention]`: which snapshots `vault prune` and the agent keep.
//!
//! Absent, the table means [`Retention::default`]: every 15-minute snapshot for a day, hourly
//! for a week, daily for a week, weekly for a month, monthly forever. Present, it is the whole
//! policy: a rule it leaves out keeps nothing (as in restic and borg), and a table that keeps
//! nothing at all is refused rather than pruning every snapshot. Counts are integers; `-1` means
//! unlimited ([`Keep::Unlimited`]), as restic's `--keep-* -1`. This module parses the policy; it
//! does not apply it.

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::check;
use super::error::{ConfigError, Ctx};

/// How many snapshots one retention rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// At most this many (0: the rule is off).
    Count(u32),
    /// All of them; written `-1`.
    Unlimited,
}

impl Keep {
    /// The rule that keeps nothing.
    pub const NONE: Keep = Keep::Count(0);

    /// The limit, or `None` for unlimited.
    pub fn limit(self) -> Option<u32> {
        match self {
            Keep::Count(n) => Some(n),
            Keep::Unlimited => None,
        }
    }

    /// Whether the rule keeps anything at all.
    pub fn keeps_any(self) -> bool {
        self != Keep::NONE
    }
}

impl Serialize for Keep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Keep::Count(n) => s.serialize_i64(i64::from(*n)),
            Keep::Unlimited => s.serialize_i64(-1),
        }
    }
}

/// The `[retention]` table. A snapshot is kept when any rule keeps it; the last-known-good is
/// never pruned whatever the rules say (that is the retention code's contract, not this table's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// The newest N snapshots.
    pub keep_last: Keep,
    /// Every snapshot younger than this (zero: off).
    #[serde(serialize_with = "check::serialize_duration")]
    pub keep_within: Duration,
    /// The newest snapshot of each of the last N quarter hours.
    pub keep_quarter_hourly: Keep,
    /// The newest snapshot of each of the last N hours.
    pub keep_hourly: Keep,
    /// The newest snapshot of each of the last N days.
    pub keep_daily: Keep,
    /// The newest snapshot of each of the last N weeks.
    pub keep_weekly: Keep,
    /// The newest snapshot of each of the last N months.
    pub keep_monthly: Keep,
    /// The newest snapshot of each of the last N years.
    pub keep_yearly: Keep,
}

impl Retention {
    /// Whether any rule keeps anything (a policy that keeps nothing is refused).
    pub fn keeps_any(&self) -> bool {
        !self.keep_within.is_zero()
            || [
                self.keep_last,
                self.keep_quarter_hourly,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
            ]
            .into_iter()
            .any(Keep::keeps_any)
    }
}

impl Default for Retention {
    /// 15-minute snapshots for 24 h, hourly for 7 days, daily 7, weekly 4, monthly forever.
    fn default() -> Self {
        Retention {
            keep_last: Keep::NONE,
            keep_within: Duration::ZERO,
            keep_quarter_hourly: Keep::Count(96),
            keep_hourly: Keep::Count(168),
            keep_daily: Keep::Count(7),
            keep_weekly: Keep::Count(4),
            keep_monthly: Keep::Unlimited,
            keep_yearly: Keep::NONE,
        }
    }
}

/// The `[retention]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireRetention {
    keep_last: Option<Spanned<i64>>,
    keep_within: Option<Spanned<String>>,
    keep_quarter_hourly: Option<Spanned<i64>>,
    keep_hourly: Option<Spanned<i64>>,
    keep_daily: Option<Spanned<i64>>,
    keep_weekly: Option<Spanned<i64>>,
    keep_monthly: Option<Spanned<i64>>,
    keep_yearly: Option<Spanned<i64>>,
}

impl super::Section for WireRetention {
    const EXPECTING: &'static str = "the [retention] table";
}

impl WireRetention {
    /// Checks the table; `table` is its span, for the "keeps nothing" error.
    pub(super) fn check(
        self,
        ctx: &Ctx<'_>,
        table: std::ops::Range<usize>,
    ) -> Result<Retention, ConfigError> {
        let keep = |v: &Option<Spanned<i64>>, key: &str| -> Result<Keep, ConfigError> {
            let Some(v) = v else { return Ok(Keep::NONE) };
            match *v.get_ref() {
                -1 => Ok(Keep::Unlimited),
                n => u32::try_from(n).map(Keep::Count).map_err(|_| {
                    ctx.invalid(
                        v,
                        format!(
                            "retention.{key} {n} must be a count from 0 to {} or -1 for unlimited",
                            u32::MAX
                        ),
                    )
                }),
            }
        };
        let policy = Retention {
            keep_last: keep(&self.keep_last, "keep_last")?,
            keep_within: match &self.keep_within {
                Some(v) => check::duration(ctx, v, "retention.keep_within")?,
                None => Duration::ZERO,
            },
            keep_quarter_hourly: keep(&self.keep_quarter_hourly, "keep_quarter_hourly")?,
            keep_hourly: keep(&self.keep_hourly, "keep_hourly")?,
            keep_daily: keep(&self.keep_daily, "keep_daily")?,
            keep_weekly: keep(&self.keep_weekly, "keep_weekly")?,
            keep_monthly: keep(&self.keep_monthly, "keep_monthly")?,
            keep_yearly: keep(&self.keep_yearly, "keep_yearly")?,
        };
        if !policy.keeps_any() {
            return Err(ctx.invalid_at(
                table,
                "[retention] keeps no snapshot: keys it leaves out keep nothing, so set at least \
                 one keep_* rule, or remove the table for the default policy",
            ));
        }
        Ok(policy)
    }
}
