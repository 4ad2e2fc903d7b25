"""centermask2's models (CenterMask, FCOS, VoVNet-V2) re-implemented for export, no framework needed."""
