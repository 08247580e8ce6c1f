"""Search-augmented QA (Search-R1 protocol): corpora, question sets, retrieval backends, server, env."""
