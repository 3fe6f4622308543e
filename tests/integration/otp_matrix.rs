//! The OTP matrix: the same user-facing sequence (check --handshake, dry run, migrate, status,
//! rollback) on hosts that run OTP 27 (Debian trixie) and OTP 29 (Debian sid), and on clusters
//! that mix two majors as during an OTP upgrade. Each test names a cell of the README's support
//! matrix. Skipped, with a message, where network namespaces cannot be made.

use crate::netns::migrate_and_roll_back;
use crate::otp_hosts::Otp;

#[test]
fn otp27_cluster_migrates_and_rolls_back_over_ssh() {
    migrate_and_roll_back("otpa", &[Otp::Trixie; 3]);
}

#[test]
fn otp29_cluster_migrates_and_rolls_back_over_ssh() {
    migrate_and_roll_back("otpb", &[Otp::Sid; 3]);
}

#[test]
fn mixed_otp25_otp27_cluster_migrates_and_rolls_back() {
    migrate_and_roll_back("mixa", &[Otp::Machine, Otp::Machine, Otp::Trixie]);
}

#[test]
fn mixed_otp27_otp29_cluster_migrates_and_rolls_back() {
    migrate_and_roll_back("mixb", &[Otp::Trixie, Otp::Sid, Otp::Sid]);
}
