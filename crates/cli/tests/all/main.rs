//! End-to-end tests of `bantam`: real guests built from source, served by
//! the real binary over HTTP on a free loopback port.

mod browser;
mod services;
mod support;

mod adversarial;
mod capabilities;
mod databases;
mod developer;
mod faults;
mod outbound_http;
mod platform;
mod registry;
mod reuse;
mod routing;
mod sandbox;
mod startup;
mod traces;
