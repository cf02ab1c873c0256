"""Training: the loop (AdamW, schedules, early stopping, resume), seeding, devices and
checkpoints (safetensors + JSON, validated on load), item co-occurrence and text fusion."""
