"""Chest radiograph phantoms: one CT projected once (``atlas``), findings drawn into the projection
where they belong (``findings``), and per-image anatomy, exposure and detector (``render``).

The ``phantom-cxr`` source (``synthmed.data.sources.phantom_cxr``) pairs each phantom with a real
CheXpert label row. The images show no patient.
"""
