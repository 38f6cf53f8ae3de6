"""The sd-mini factory: what makes and judges the course's offline model, apart from the course.

The top of ``sdlearn`` reads as the course (one module per notebook concept, plus the tools);
this subpackage holds the workshop behind the bundled weights:

=============  =====================================================================
``world``      the procedural captioned world sd-mini is trained on (pure function of
               ``(seed, index)``; pictures, captions, masks, depth maps, attributes)
``configs``    sd-mini's component sizes and its scheduler
``scoring``    the deterministic checker that reads a world picture back into words;
               every adherence figure in the course rests on it
``recipe``     the training recipe of sd-mini (VAE, latents cache, text encoder + UNet,
               export), written on the course's training core ``sdlearn.training``
``variants``   the depth (5-channel) and inpainting (9-channel) UNet fine-tunes
``degrade``    deliberately damaged renders (blur, warp, blob, two colours) and the VAE
               round trip: what the checker must reject, and the ceiling a model can reach
=============  =====================================================================

No module at the top of the package imports from here: the factory imports the course, never
the other way round (notebooks import both).
"""
