"""LC-Rec: a causal LLM that generates item indices (RUCAIBox/LC-Rec), as a RecBole model."""
