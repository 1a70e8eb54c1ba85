//! The digital twin: a deterministic world in which the hashsink controller (or one of the two
//! references it is measured against) drives a simulated fleet along a real surplus profile,
//! with seeded steps and dips on it and a plant meter that reads it late.
//!
//! The clock is virtual and jumps from deadline to deadline; noise, steps and faults come from a
//! seed; invariants are checked at every sample, and every run is set against the
//! step-following ideal on the same readings. The same scenario gives the same report, bit for bit.
//! Nothing here reads a clock or touches the network.

#![forbid(unsafe_code)]

pub mod compare;
pub mod disturb;
pub mod faults;
pub mod kpi;
pub mod miners;
pub mod profile;
pub mod world;

pub use disturb::{Disturbance, IdealKpis, MeterSettings, StepSettings};
pub use faults::{Fault, FaultEpisode, FaultPlan};
pub use kpi::Kpis;
pub use profile::{NuclearMethod, Profile, ProfileError};
pub use world::{ControllerChoice, EnergyBucket, RunReport, Scenario, run, shed_drill};
