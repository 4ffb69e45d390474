//! What `run` does about one dataset's period, decided in one place from the
//! landed listing and the ledger ([`decide`]). `run` performs the decision a
//! step at a time and decides again after each step (each changes the
//! ledger), `run --plan` prints it, `status` shows it (from the ledger alone)
//! and `events` asks it whether a file it took in still needs validating. So
//! the four answer "what would run redo here?" with one function, and a new
//! [`Action`] or [`StageState`] fails to compile until each of them says
//! what it does with it.

use crate::config::{ColumnRule, Config, Dataset, Rules};
use crate::landed::{Entry, Landed, LandedFile};
use crate::ledger::{FileVersion, Head, Kept, StageState, Verdict};
use tokio_postgres::Client;

/// What `run` would do next about a dataset's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing has landed for the period and nothing was taken in: wait for
    /// it (exit 5).
    Wait,
    /// The landed file is one ingest refused (or the only versions of the
    /// period were refused): refused again as it stands, nothing redone
    /// (exit 3). The reason is ingest's.
    Refused(String),
    /// A version of the file that is not in the ledger landed: ingest it,
    /// then validate and load.
    Ingest,
    /// The verdict in force no longer stands (another file, changed rules, a
    /// validation cut off, none yet) or the rows it approved are gone:
    /// validate again (from the file, by replay when it is gone, or
    /// re-judged on its kept rows when only rules changed), then load.
    Validate,
    /// The verdict stands and passed, stage does not hold its rows: load.
    Load,
    /// The verdict stands and rejected the file: nothing to redo until the
    /// file or the rules change (exit 3).
    Rejected,
    /// The cleaned Delta table cannot be read (why): nothing can be decided
    /// until it can (exit 1).
    Broken(String),
    /// Stage holds exactly what the verdict in force approved.
    Nothing,
}

impl Action {
    /// The steps `run --plan` names for it; None when run redoes nothing.
    pub fn words(&self) -> Option<&'static str> {
        match self {
            Action::Ingest => Some("ingest, validate, load"),
            Action::Validate => Some("validate, load"),
            Action::Load => Some("load"),
            Action::Broken(_) => Some("fail"),
            Action::Wait | Action::Refused(_) | Action::Rejected | Action::Nothing => None,
        }
    }
}

/// The decision about one dataset's period, with what it was decided from.
#[derive(Debug, Clone)]
pub struct Decision {
    pub action: Action,
    /// Why, in words, for the actions that redo something (`run --plan`'s
    /// and `status`'s reason); empty otherwise.
    pub reason: String,
    pub state: StageState,
    /// The verdict in force, if any.
    pub verdict: Option<Verdict>,
    /// The period's current file version, if any.
    pub current: Option<FileVersion>,
    /// The period's landed entry, when the landed dir was listed and has one.
    pub entry: Option<Entry>,
    /// The rows the verdict approved are gone from the cleaned table (why):
    /// they must be validated again, and cannot be replayed.
    pub lost: Option<String>,
}

/// The landed dir as listed once for a command.
#[derive(Clone, Copy)]
pub struct Listing<'a> {
    pub landed: &'a Landed,
    pub entries: &'a [Entry],
}

/// One dataset's period: which dataset, and its own period (None for a
/// full-refresh dataset).
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    pub config: &'a Config,
    pub name: &'a str,
    pub ds: &'a Dataset,
    pub period: Option<&'a str>,
    /// The cleaned table's head when the caller read it already (`status`
    /// reads it once per dataset); else it is read when needed.
    pub head: Option<&'a Head>,
    /// Where a caller deciding the period again (`run`) keeps the stage rows
    /// counted after the latest load ([`StageState::read`]).
    pub counted: Option<&'a crate::ledger::StageRows>,
}

impl Subject<'_> {
    /// The landed file of this dataset and period among `entries` (the last
    /// listed when there are several).
    pub fn entry<'e>(&self, entries: &'e [Entry]) -> Option<&'e Entry> {
        entries.iter().rfind(|e| {
            let caps = self.ds.pattern().captures(e.name());
            if self.ds.incremental.is_some() {
                // An incremental snapshot's period is its acquisition folder.
                return caps.is_some() && e.acq_date().is_some() && e.acq_date() == self.period;
            }
            match (caps, self.period) {
                (Some(found), Some(p)) => found.name("period").is_some_and(|m| m.as_str() == p),
                (Some(_), None) => true,
                (None, _) => false,
            }
        })
    }
}

/// Decides what `run` would do next about `s`'s period. With a `listing`
/// the landed file is compared with the ledger's versions (ingest's own
/// test: the same object, size and bytes); without one (`status`) the
/// decision is the ledger's alone and never `Ingest`.
pub async fn decide(
    client: &Client,
    s: Subject<'_>,
    listing: Option<Listing<'_>>,
) -> Result<Decision, tokio_postgres::Error> {
    let current = FileVersion::current(client, s.name, s.period).await?;
    let entry = listing.and_then(|l| s.entry(l.entries)).cloned();
    let (state, verdict) = StageState::read(client, s.name, s.ds, s.period, s.counted).await?;
    let mut d = Decision {
        action: Action::Nothing,
        reason: String::new(),
        state,
        verdict,
        current,
        entry,
        lost: None,
    };
    if let Some(action) = landed(client, s, listing, &d).await? {
        d.action = action;
        if d.action == Action::Ingest {
            let name = d.entry.as_ref().map_or("", |e| e.name());
            d.reason = format!("{name} landed and is not ingested yet");
        }
        return Ok(d);
    }
    if d.state == StageState::NotArrived {
        d.action = match FileVersion::latest_rejected(client, s.name, s.period).await? {
            Some(v) => Action::Refused(refusal(&v)),
            None => Action::Wait,
        };
        return Ok(d);
    }
    from_ledger(s, &mut d, listing.is_some()).await;
    Ok(d)
}

/// What the landed entry decides by itself: a refused version landed again,
/// or a version the ledger does not hold; None when it is the current
/// version (or nothing is listed).
async fn landed(
    client: &Client,
    s: Subject<'_>,
    listing: Option<Listing<'_>>,
    d: &Decision,
) -> Result<Option<Action>, tokio_postgres::Error> {
    let (Some(listing), Some(entry)) = (listing, &d.entry) else {
        return Ok(None);
    };
    let f = match entry {
        // A name no file may have: ingest records the refusal.
        Entry::Refused { reason, .. } => return Ok(Some(Action::Refused(reason.clone()))),
        Entry::File(f) => f,
    };
    let refused = FileVersion::latest_rejected(client, s.name, s.period).await?;
    let mut sha256 = None;
    // A version ingest refused before would be refused again.
    if let Some(v) = refused.as_ref()
        && same_version(listing.landed, f, Some(v), &mut sha256).await
    {
        return Ok(Some(Action::Refused(refusal(v))));
    }
    if !same_version(listing.landed, f, d.current.as_ref(), &mut sha256).await {
        return Ok(Some(Action::Ingest));
    }
    Ok(None)
}

/// Why ingest refused version `v`, as ingest said it.
fn refusal(v: &FileVersion) -> String {
    match &v.reason {
        Some(r) => format!("{}: {r}", v.file_name),
        None => format!("{} was refused", v.file_name),
    }
}

/// The decision when the current file is the one the ledger knows: from the
/// verdict in force, the rows it kept and what stage holds. `listed`: the
/// landed dir was listed, so a missing entry means the file is gone.
async fn from_ledger(s: Subject<'_>, d: &mut Decision, listed: bool) {
    let load_only = d.state.needs_load_only();
    if load_only && let Some(v) = d.verdict.as_ref() {
        match kept_rows(s, v).await {
            Kept::Intact => {}
            Kept::Lost(why) => d.lost = Some(why),
            Kept::Damaged(why) => {
                d.action = Action::Broken(damaged(&why));
                return;
            }
            Kept::Unreadable(why) => {
                let why = format!("cannot read the cleaned Delta table: {why}; try again");
                d.action = Action::Broken(why);
                return;
            }
        }
    }
    let rejected = d.verdict.as_ref().is_some_and(|v| !v.passed);
    let (action, reason) = match (&d.lost, d.state.stale(d.verdict.as_ref())) {
        (Some(why), _) => {
            let id = d.verdict.as_ref().map_or(0, |v| v.validation_id);
            let reason = format!("the rows validation {id} approved are gone: {why}");
            (Action::Validate, reason)
        }
        (None, Some(reason)) if load_only => (Action::Load, reason),
        (None, Some(reason)) => (Action::Validate, reason),
        (None, None) if load_only && rejected => (Action::Rejected, String::new()),
        (None, None) => (Action::Nothing, String::new()),
    };
    d.action = action;
    d.reason = reason;
    // Validating again needs the file; when it is gone, say what stands in.
    if let (Action::Validate, true, None, Some(v)) = (&d.action, listed, &d.entry, &d.current) {
        let gone = match replay_refusal(s.ds, d.verdict.as_ref(), v.id) {
            None => format!(
                "{} is no longer in the landed dir: the rows its verdict kept are replayed",
                v.file_name
            ),
            Some(why) => format!(
                "{} is no longer in the landed dir and the rows kept of it cannot stand in \
                 ({why}): put it back first",
                v.file_name
            ),
        };
        d.reason = format!("{}; {gone}", d.reason);
    }
}

/// Whether the rows a passed verdict approved are still in the cleaned table
/// (a failed one is not loaded: nothing to check).
pub async fn kept_rows(s: Subject<'_>, v: &Verdict) -> Kept {
    match (v.passed, v.cleaned_version) {
        (true, Some(version)) => {
            let id = v.cleaned_table_id.as_deref();
            match s.head {
                Some(head) => head.keeps(version, id),
                None => {
                    let location = crate::ledger::delta_location(s.config, "cleaned", s.name);
                    location.head().await.keeps(version, id)
                }
            }
        }
        _ => Kept::Intact,
    }
}

/// What to do about a damaged Delta log.
pub fn damaged(why: &str) -> String {
    format!(
        "the cleaned Delta table cannot be read: {why}. Its `_delta_log` is damaged; nothing \
         was changed. Move the table aside (its folder, or on S3 its prefix) and run again: \
         run then validates each period again from its landed file (operations.md, \
         \"A damaged or lost stage_dir\")"
    )
}

/// Whether landed file `f` is version `v` as ingest would find it: the same
/// object, size and bytes (ingest gives the same bytes the same id, touched
/// or uploaded again; new bytes of the same size and time are a new
/// version). `sha256` is the file's digest, computed at the first need.
async fn same_version(
    landed: &Landed,
    f: &LandedFile,
    v: Option<&FileVersion>,
    sha256: &mut Option<Option<String>>,
) -> bool {
    let Some(v) = v else { return false };
    if v.source_uri != f.uri || v.size_bytes != Some(f.size as i64) {
        return false;
    }
    if sha256.is_none() {
        *sha256 = Some(landed.fingerprint(f, false).await.ok().map(|fp| fp.sha256));
    }
    match (&v.sha256, sha256) {
        (Some(known), Some(Some(now))) => known == now,
        _ => false,
    }
}

/// Whether a change to rule `key` (as [`crate::config::Rules`] names it) can be
/// judged on the kept rows.
pub fn replayable(key: &str) -> bool {
    matches!(
        key,
        "primary_key" | "min_quality_score" | "max_shrink" | "max_rejected_ratio"
    ) || ColumnRule::of_key(key).is_some_and(ColumnRule::replayable)
}

/// Why the rows kept by `verdict` cannot stand in for file `file_id` under
/// `ds`'s rules now; None when they can.
pub fn replay_refusal(ds: &Dataset, verdict: Option<&Verdict>, file_id: i64) -> Option<String> {
    let Some(v) = verdict else {
        return Some("no verdict of it was kept".into());
    };
    let why = if v.ingestion_id != file_id {
        format!(
            "the verdict in force judged another version (file {})",
            v.ingestion_id
        )
    } else if v.malformed {
        "the file could not be parsed, so none of its rows were kept".into()
    } else if v.cleaned_version.is_none() || v.quarantine_version.is_none() {
        "its verdict wrote no rows".into()
    } else if ds.incremental.is_some() {
        "an incremental dataset keeps only the rows of keys new that night".into()
    } else if let Some(then) = &v.rules {
        let needs: Vec<String> = (then.changed(&Rules::of(ds)).into_iter())
            .filter(|k| !replayable(k))
            .collect();
        if needs.is_empty() {
            return None;
        }
        format!(
            "the change to {} decides how the file's text becomes values (a replay re-judges \
             allowed, regex, min, max, required, unique, the key and the thresholds only)",
            needs.join(", ")
        )
    } else {
        "its verdict was recorded before rules were".into()
    };
    Some(why)
}
