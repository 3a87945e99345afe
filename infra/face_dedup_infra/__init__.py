"""The face-dedup AWS deployment (CDK, Python): one construct per unit, composed in `stack`."""
