pub mod leases;
