//! The pure core of hashsink: the fleet model and the controller that makes a fleet of ASIC
//! miners follow a power surplus.
//!
//! Nothing in this crate performs I/O or reads a clock. The controller is a state machine:
//! inputs and the current time go in through [`api::FleetController::handle_input`] and
//! [`api::FleetController::handle_timeout`], per-miner commands come out of
//! [`api::FleetController::poll_command`]. The daemon, the digital twin, the study and the demo
//! all drive this same controller.

#![forbid(unsafe_code)]

pub mod api;
pub mod baseline;
pub mod catalogue;
pub mod controller;
pub mod firmware;
pub mod fleet;
pub mod rate_limit;
pub mod reference;
pub mod region;
pub mod setpoint;

pub use api::{
    Action, Command, CommandId, CommandOutcome, FleetController, Input, MinerReport, MinerStatus,
    OperatorCommand, Reason, Refusal,
};
pub use baseline::{Baseline, BaselineConfig};
pub use catalogue::{AsicModel, Catalogue};
pub use controller::{
    ControlUse, Controller, ControllerConfig, ControllerSettings, ControllerStats, FaultKind,
    PlanBreakdown, PlanPart, SignalState,
};
pub use firmware::{ControlKind, FirmwareKind};
pub use fleet::{
    Envelope, Fleet, FleetConfig, FleetError, GroupConfig, MinerId, MinerSpec, SpecId, build_fleet,
};
pub use setpoint::{Setpoint, SetpointConfig};
