"""Starting files that ``tfs exercise`` writes: each component's class with tfs's
constructor and parameters and a ``forward`` left to the learner. They are read as text,
never imported by tfs; ``{file}`` in a docstring becomes the path the file is written to.
"""
