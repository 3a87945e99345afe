"""MOSIP-compatible ABIS: MOSIP's biometric-matcher queue protocol on the face-dedup core."""
