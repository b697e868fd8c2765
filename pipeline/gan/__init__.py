"""GAN building blocks: models, losses, penalties, augmentation, EMA. No job spec imported here."""
