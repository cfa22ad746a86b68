"""Reader study (paper S.8, S.10): radiologists label a mix of real and synthetic images.

``create`` draws the images and hides the key in a private SQLite database, ``app`` serves one
image at a time to each reader over their private link, ``analysis`` turns the answers into the
paper's TR / FR / TS / FS tables, accuracies and Wilcoxon test. The command line is
``synthmed reader-study create | add-reader | serve | analyze``.
"""
