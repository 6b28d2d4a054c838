//! Amplitude's quotas, enforced on our side so they are never hit: the sliding-window
//! limits on single-cohort requests, the concurrency gate shared by every call to one app,
//! bounded retries of what was refused anyway, the monthly download budget and its even
//! pacing over the month; and the time each piece of work spent waiting for them
//! ([`waits`]).

mod budget;
mod limits;
mod pace;
mod retry;
pub mod waits;
mod window;

pub use budget::{BudgetDecision, plan_budget};
pub use limits::{AppLimits, LimitSettings, LimitsRegistry, TIME_SCALE_ENV, time_scale_from_env};
pub use pace::{Allowance, MonthHours, Pace};
pub use retry::{RetryPolicy, rate_limited_only, transient};
pub use window::SlidingWindow;
