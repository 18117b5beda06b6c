"""fundus2ffa: colour fundus (CF) to fluorescein angiography (FFA) translation.

Model families (see ../shared/docs/reference_spec.md): the saliency cGAN of Li et al. (MIDL 2020),
Fundus2Angio (Kamran et al. 2020), Fundus2Video (Zhang et al., MICCAI 2024), and the pix2pix,
pix2pixHD and CycleGAN baselines. Entry point: ``python -m fundus2ffa.run``.
"""

__version__ = "0.1.0"
