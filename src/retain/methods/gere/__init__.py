"""GeRe: general-sample replay with the threshold-based margin loss (gere.md)."""
