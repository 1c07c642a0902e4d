"""Follow Your Pose network pieces, trainers and sampler (see README; stage-1 and stage-2 come with their issues)."""
