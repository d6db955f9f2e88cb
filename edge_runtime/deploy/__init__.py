"""Target profiles, host detection, bundles for a target and the ssh install."""
