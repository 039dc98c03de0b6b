"""Galleries: the persistent store of subjects and faces, and the FAISS indexes that search them."""
